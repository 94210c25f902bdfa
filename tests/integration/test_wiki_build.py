"""End-to-end corpus building: content, repeats, determinism, caching, atomicity, readers."""

from __future__ import annotations

import bz2
import json
import logging
import multiprocessing
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cofee.config import AnchorBuildConfig
from cofee.data import ordered_pool
from cofee.data.wiki import build_anchors as ba
from cofee.data.wiki.build_anchors import build_anchor_corpus, iter_corpus, load_manifest
from cofee.utils.errors import CofeeError, ConfigError, InputFileError
from cofee.utils.io import atomic_directory, remove_stale_temp_dirs
from tests.support import run_cli, write_multistream_dump

FIXTURE = Path(__file__).parents[1] / "fixtures" / "wiki" / "mini.xml"


def build(out, config=None, **kwargs):
    kwargs.setdefault("progress", False)
    return build_anchor_corpus(FIXTURE, out, config or AnchorBuildConfig(), **kwargs)


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.jsonl"))}


def spans_of(records):
    """(title, surface, target, kind) for every span, checking offsets on the way."""
    out = []
    for record in records:
        previous_end = 0
        for start, end, target, kind in record["spans"]:
            assert previous_end <= start < end <= len(record["text"])
            previous_end = end
            out.append((record["title"], record["text"][start:end], target, kind))
    return out


def test_fixture_corpus_content(tmp_path):
    manifest = build(tmp_path / "corpus")
    records = list(iter_corpus(tmp_path / "corpus"))
    assert manifest["counts"] == {
        "pages": 3,
        "redirects": 2,
        "skipped_pages": 2,
        "sentences": len(records),
        "anchors": len(spans_of(records)),
        "repeats": 0,
        "titles": 0,
        "anchor_targets_resolved_via_redirect": 2,
    }
    assert all(record["spans"] for record in records)  # min_anchors_per_sentence=1
    # two of the three Chinese sentences are shorter than min_sentence_chars (20)
    assert [r["page_id"] for r in records if r["page_id"] == 106] == [106]
    first = records[0]
    assert first == {
        "page_id": 101,
        "title": "São Paulo",
        "text": "São Paulo (Saint Paul) is a municipality in the Brazilian Southeast Region.",
        "spans": [
            [28, 40, "Municipality", "anchor"],
            [48, 57, "Brazil", "anchor"],  # [[Brasil|Brazilian]], Brasil redirects to Brazil
            [58, 74, "Southeast Region, Brazil", "anchor"],
        ],
    }
    found = spans_of(records)
    for expected in [
        ("São Paulo", "Jesuit", "Society of Jesus", "anchor"),
        ("São Paulo", "Tupis", "Tupi people", "anchor"),  # link trail
        ("São Paulo", "immigrants", "Immigration", "anchor"),
        ("São Paulo", "Tietê River", "Tietê River", "anchor"),
        ("São Paulo", "Zürich", "Zürich", "anchor"),
        ("São Paulo", "Paris", "Paris, Texas", "anchor"),  # pipe trick
        ("São Paulo", "Tokyo", "Tokyo", "anchor"),  # pipe trick + redirect
        ("Zürich", "The airport", "Zürich Airport", "anchor"),
        ("Zürich", "ETH Zurich", "ETH Zurich", "anchor"),
    ]:
        assert expected in found
    surfaces = {surface for _, surface, _, _ in found}
    for dropped in ["Paulista Avenue", "Consolação", "31,385", "Linked source", "Comment link", "Brazil"]:
        assert dropped not in surfaces  # File caption, table, <ref>, comment, template, Talk page
    texts = "\n".join(r["text"] for r in records)
    for junk in ["{{", "}}", "[[", "]]", "<ref", "&nbsp;", "'''", "File:", "==", "wikitable", "http"]:
        assert junk not in texts


def test_sentence_splitting_and_filters(tmp_path):
    build(tmp_path / "all", AnchorBuildConfig(min_anchors_per_sentence=0, min_sentence_chars=1))
    by_page = {}
    for record in iter_corpus(tmp_path / "all"):
        by_page.setdefault(record["title"], []).append(record["text"])
    assert (
        by_page["Zürich"][1]
        == "Dr. J. R. R. Smith of the U.S. Navy visited Zürich in 1998, e.g. for 3.5 days."
    )
    assert by_page["北京"] == [
        "北京是中华人民共和国的首都，位于华北平原北部。",
        "长城横跨北京北部的山区。",
        "北京有许多大学！",
    ]
    chinese = [s for s in spans_of(iter_corpus(tmp_path / "all")) if s[0] == "北京"]
    assert chinese == [
        ("北京", "中华人民共和国", "中华人民共和国", "anchor"),
        ("北京", "华北平原", "华北平原", "anchor"),
        ("北京", "长城", "长城", "anchor"),
    ]
    manifest = build(tmp_path / "cap", AnchorBuildConfig(capitalised_only=True, max_sentence_chars=80))
    found = spans_of(iter_corpus(tmp_path / "cap"))
    assert found and all(surface[0].isupper() or page == "北京" for page, surface, _, _ in found)
    assert ("São Paulo", "city", "City", "anchor") not in found
    assert ("北京", "中华人民共和国", "中华人民共和国", "anchor") in found  # caseless script: kept
    assert manifest["counts"]["sentences"] == len(list(iter_corpus(tmp_path / "cap")))
    assert all(len(r["text"]) <= 80 for r in iter_corpus(tmp_path / "cap"))


def test_mark_repeats(tmp_path):
    manifest = build(tmp_path / "rep", AnchorBuildConfig(mark_repeats=True))
    records = {r["text"]: r for r in iter_corpus(tmp_path / "rep")}
    hosts = records[
        "Zürich hosts the ETH Zurich; many students of ETH Zurich come from Switzerland and abroad."
    ]
    assert spans_of([hosts]) == [
        ("Zürich", "Zürich", "Zürich", "title"),
        ("Zürich", "ETH Zurich", "ETH Zurich", "anchor"),
        ("Zürich", "ETH Zurich", "ETH Zurich", "repeat"),
        ("Zürich", "Switzerland", "Switzerland", "anchor"),
    ]
    # a sentence with no link at all is kept because of its repeat/title spans
    borders = records["Switzerland borders Germany."]
    assert spans_of([borders]) == [("Zürich", "Switzerland", "Switzerland", "repeat")]
    dr = records["Dr. J. R. R. Smith of the U.S. Navy visited Zürich in 1998, e.g. for 3.5 days."]
    assert spans_of([dr]) == [("Zürich", "Zürich", "Zürich", "title")]
    sp = records["Its sister city Zürich is in Switzerland; see also Paris and Tokyo."]
    # links stay anchors and are never doubled; "city" repeats the earlier [[city]] anchor
    assert [s[1:] for s in spans_of([sp])] == [
        ("city", "City", "repeat"),
        ("Zürich", "Zürich", "anchor"),
        ("Switzerland", "Switzerland", "anchor"),
        ("Paris", "Paris, Texas", "anchor"),
        ("Tokyo", "Tokyo", "anchor"),
    ]
    counts = manifest["counts"]
    assert counts["repeats"] >= 2 and counts["titles"] >= 3
    assert counts["anchors"] == build(tmp_path / "plain")["counts"]["anchors"]


def test_repeats_respect_word_boundaries():
    from cofee.data.wiki.wikitext import WikitextCleaner

    wikitext = "York is [[York]]. Yorkshire is near York. New York differs. '''York''' again"
    config = AnchorBuildConfig(mark_repeats=True, min_sentence_chars=1)
    lines, counts = ba.process_page(1, "Ebor", wikitext, WikitextCleaner(), config)
    found = spans_of([json.loads(line) for line in lines])
    assert [s[1:] for s in found] == [
        ("York", "York", "anchor"),
        ("York", "York", "repeat"),
        ("York", "York", "repeat"),
        ("York", "York", "repeat"),
    ]
    assert counts["repeats"] == 3


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 20])  # one chunk a page (many in flight), one chunk
def test_multiprocessing_output_is_identical(tmp_path, monkeypatch, chunk_bytes):
    config = AnchorBuildConfig(
        mark_repeats=True, shard_size=4, min_anchors_per_sentence=0, min_sentence_chars=1
    )
    one = build(tmp_path / "one", config, num_workers=1)
    monkeypatch.setattr(ba, "_CHUNK_BYTES", chunk_bytes)
    two = build(tmp_path / "two", config, num_workers=2)
    assert build(tmp_path / "one-chunked", config, num_workers=1)["shards"] == one["shards"]
    assert one["counts"] == two["counts"] and one["shards"] == two["shards"]
    assert len(one["shards"]) > 2 and all(s["sentences"] <= 4 for s in one["shards"])
    for shard in one["shards"]:
        assert (tmp_path / "one" / shard["file"]).read_bytes() == (
            tmp_path / "two" / shard["file"]
        ).read_bytes()


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_every_start_method_gives_the_same_output(tmp_path, monkeypatch, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    config = AnchorBuildConfig(shard_size=4, min_anchors_per_sentence=0, min_sentence_chars=1)
    one = build(tmp_path / "one", config, num_workers=1)
    monkeypatch.setattr(ba, "_CHUNK_BYTES", 1)  # one chunk a page
    monkeypatch.setattr(ordered_pool, "FORCED_START_METHOD", method)
    two = build(tmp_path / "two", config, num_workers=2)
    assert one["counts"] == two["counts"] and one["shards"] == two["shards"]
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")


def test_default_start_method():
    assert ordered_pool.FORCED_START_METHOD is None
    assert ordered_pool.start_method() == ("fork" if sys.platform.startswith("linux") else "spawn")


def test_workers_start_in_a_process_running_torch_threads(tmp_path, monkeypatch):
    """The pre-training process builds the corpus with torch loaded and its OpenMP pool running."""
    torch = pytest.importorskip("torch")
    torch.ones(256, 256) @ torch.ones(256, 256)  # starts the intra-op thread pool
    if Path("/proc/self/task").is_dir() and torch.get_num_threads() > 1:
        assert len(list(Path("/proc/self/task").iterdir())) > 1
    monkeypatch.setattr(ba, "_CHUNK_BYTES", 1)
    one = build(tmp_path / "one", num_workers=1)
    two = build(tmp_path / "two", num_workers=2)
    assert one["shards"] == two["shards"] and one["counts"] == two["counts"]
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")


def test_rebuild_is_skipped_when_up_to_date(tmp_path, caplog, monkeypatch):
    out = tmp_path / "corpus"
    first = build(out)
    stamp = (out / "shard-00000.jsonl").stat().st_mtime_ns
    time.sleep(0.01)
    with caplog.at_level(logging.INFO, logger="cofee"):
        again = build(out)
    assert again == first
    assert "up to date" in caplog.text
    assert (out / "shard-00000.jsonl").stat().st_mtime_ns == stamp
    forced = build(out, force=True)
    assert forced["build_hash"] == first["build_hash"] and forced["counts"] == first["counts"]
    changed = build(out, AnchorBuildConfig(min_sentence_chars=5))
    assert changed["build_hash"] != first["build_hash"]
    assert load_manifest(out) == changed


def test_manifest_fields(tmp_path):
    manifest = build(tmp_path / "c")
    assert manifest["format"] == "cofee-anchor-corpus" and manifest["version"] == 1
    assert manifest["input"]["bytes"] == FIXTURE.stat().st_size and len(manifest["input"]["sha256"]) == 64
    assert manifest["config"] == ba.asdict(AnchorBuildConfig())
    assert manifest["seconds"] >= 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["manifest.json", "shard-00000.jsonl"]


@pytest.mark.parametrize("kind", ["truncated_bz2", "malformed", "empty"])
def test_broken_dump_leaves_nothing(tmp_path, kind):
    data = FIXTURE.read_bytes()
    if kind == "truncated_bz2":
        packed = bz2.compress(data)
        dump = tmp_path / "dump.xml.bz2"
        dump.write_bytes(packed[: len(packed) // 2])
    elif kind == "malformed":
        dump = tmp_path / "dump.xml"
        dump.write_bytes(
            data.replace(b"</title>\n    <ns>0</ns>\n    <id>105", b"</titel>\n    <ns>0</ns>\n    <id>105")
        )
    else:
        dump = tmp_path / "dump.xml"
        dump.write_bytes(b"")
    out = tmp_path / "out"
    for workers in (1, 2):
        with pytest.raises(InputFileError) as info:
            build_anchor_corpus(
                dump, out, AnchorBuildConfig(shard_size=1), num_workers=workers, progress=False
            )
        assert str(dump) in str(info.value)
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != dump.name] == []  # no temp folder left


def test_malformed_xml_in_a_later_chunk_with_workers(tmp_path, monkeypatch):
    """A worker reports the line in the whole file; the first error in file order wins."""
    monkeypatch.setattr(ba, "_CHUNK_BYTES", 1)  # one chunk a page
    text = FIXTURE.read_text(encoding="utf-8").replace("<title>北京</title>", "<title>北京</titel>")
    line = text[: text.index("</titel>")].count("\n") + 1
    malformed = tmp_path / "bad.xml"
    malformed.write_text(text, encoding="utf-8")
    # the same error, then 2 MB (three bz2 blocks) cut short: a serial read meets the XML error first
    filler = "<!-- " + random.Random(0).randbytes(1 << 20).hex() + " -->\n</mediawiki>"
    packed = bz2.compress(text.replace("</mediawiki>", filler).encode("utf-8"))
    truncated = tmp_path / "bad-cut.xml.bz2"
    truncated.write_bytes(packed[: len(packed) * 3 // 4])
    for dump in (malformed, truncated):
        for workers in (1, 2):
            out = tmp_path / f"out{workers}"
            with pytest.raises(InputFileError) as info:
                build_anchor_corpus(
                    dump, out, AnchorBuildConfig(shard_size=1), num_workers=workers, progress=False
                )
            assert "malformed XML" in str(info.value) and str(dump) in str(info.value)
            assert info.value.line == line
            assert not out.exists()


def test_failed_rebuild_keeps_the_good_corpus(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    good = build(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("worker failed")

    monkeypatch.setattr(ba, "_resolve_redirects", boom)
    with pytest.raises(RuntimeError):
        build(out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert load_manifest(out) == good


def test_readers_validate(tmp_path):
    with pytest.raises(InputFileError, match="no manifest.json: run cofee-build-anchors"):
        load_manifest(tmp_path)
    out = tmp_path / "corpus"
    build(out)
    shard = out / "shard-00000.jsonl"
    lines = shard.read_text(encoding="utf-8").splitlines()

    shard.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        list(iter_corpus(out))
    assert info.value.line == 2 and info.value.path == str(shard)

    record = json.loads(lines[2])
    record["spans"][0][1] = len(record["text"]) + 5
    shard.write_text("\n".join([*lines[:2], json.dumps(record), *lines[3:]]) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="out of range") as info:
        list(iter_corpus(out))
    assert info.value.line == 3 and str(shard) in str(info.value)

    shard.unlink()
    with pytest.raises(InputFileError, match="missing"):
        list(iter_corpus(out))
    (out / "manifest.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(InputFileError, match="not an anchor corpus"):
        load_manifest(out)


def test_bad_config_and_missing_dump(tmp_path):
    with pytest.raises(ConfigError, match="data.anchors.build.shard_size"):
        build(tmp_path / "x", AnchorBuildConfig(shard_size=0))
    with pytest.raises(ConfigError, match="data.anchors.build_workers"):
        build(tmp_path / "x", num_workers=0)
    with pytest.raises(InputFileError, match="not found"):
        build_anchor_corpus(tmp_path / "missing.xml", tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_default_dump_path(monkeypatch):
    try:
        path = ba.default_dump_path()
    except CofeeError:
        pytest.skip("gensim not installed")
    assert path.name == ba.GENSIM_SAMPLE and path.is_file()
    monkeypatch.setattr(ba.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CofeeError, match="gensim is not installed"):
        ba.default_dump_path()


def test_cli_builds_and_reports_a_missing_dump_on_one_line(tmp_path):
    """`cofee-build-anchors` composes the real config; a bad dump is one line, exit 2, no corpus."""

    def run(*overrides):
        return run_cli(
            "build_anchors", f"paths.root={tmp_path}", "data.anchors.build_workers=1", *overrides, timeout=120
        )

    run_folder = tmp_path / "outputs" / "mine" / ".hydra"  # a pretraining run's saved config
    run_folder.mkdir(parents=True)
    (run_folder / "config.yaml").write_text("seed: 7\n", encoding="utf-8")
    ok = run(f"data.anchors.dump={FIXTURE}", "data.anchors.build.mark_repeats=true", "run_name=mine")
    assert ok.returncode == 0, ok.stderr
    assert load_manifest(tmp_path / "data" / "anchors")["counts"]["repeats"] > 0
    # a build owns no run folder: it leaves the run's config as it was and writes nothing else there
    assert (run_folder / "config.yaml").read_text(encoding="utf-8") == "seed: 7\n"
    assert sorted(p.name for p in (tmp_path / "outputs").rglob("*")) == [".hydra", "config.yaml", "mine"]
    missing = run(f"data.anchors.dump={tmp_path / 'none.xml'}", f"data.anchors.corpus_dir={tmp_path / 'd'}")
    assert missing.returncode == 2
    errors = [line for line in missing.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "none.xml" in errors[0] and "not found" in errors[0]
    assert not (tmp_path / "d").exists()
    header_only = tmp_path / "header.xml"
    data = FIXTURE.read_bytes()
    header_only.write_bytes(data[: data.index(b"  <page>")] + b"</mediawiki>\n")
    empty = run(f"data.anchors.dump={header_only}", f"data.anchors.corpus_dir={tmp_path / 'e'}")
    assert empty.returncode == 2
    errors = [line for line in empty.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(header_only) in errors[0] and "no article page" in errors[0]
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob(".e.*"))


def test_gensim_sample(tmp_path):
    """The real 206-page English sample (about 1 s to build)."""
    try:
        dump = ba.default_dump_path()
    except CofeeError:
        pytest.skip("gensim not installed")
    manifest = build_anchor_corpus(dump, tmp_path / "g", AnchorBuildConfig(), progress=False)
    counts = manifest["counts"]
    assert counts["pages"] == 106 and counts["redirects"] == 99 and counts["skipped_pages"] == 1
    assert counts["sentences"] > 10_000 and counts["anchors"] > 20_000
    n = 0
    for record in iter_corpus(tmp_path / "g"):
        n += 1
        for start, end, _target, _kind in record["spans"]:
            surface = record["text"][start:end]
            assert surface == surface.strip() and "[[" not in surface and "]]" not in surface
    assert n == counts["sentences"]


# -- multistream dumps, encodings, empty builds, temp folders of killed builds ----------------------
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("pages_per_stream", [1, 3])
def test_multistream_build_is_the_single_stream_build(tmp_path, monkeypatch, workers, pages_per_stream):
    config = AnchorBuildConfig(
        mark_repeats=True, shard_size=3, min_anchors_per_sentence=0, min_sentence_chars=1
    )
    single = tmp_path / "single.xml.bz2"
    single.write_bytes(bz2.compress(FIXTURE.read_bytes()))
    reference = build_anchor_corpus(single, tmp_path / "ref", config, num_workers=1, progress=False)
    dump = write_multistream_dump(FIXTURE.read_bytes(), tmp_path, pages_per_stream=pages_per_stream)
    monkeypatch.setattr(ba, "_CHUNK_BYTES", 1)  # one task per stream: many in flight
    seen = []
    iter_parse = ba.PageParser.iter_parse
    monkeypatch.setattr(
        ba.PageParser, "iter_parse", lambda self, chunk: seen.append(type(chunk)) or iter_parse(self, chunk)
    )
    manifest = build_anchor_corpus(dump, tmp_path / "multi", config, num_workers=workers, progress=False)
    if workers == 1:
        assert set(seen) == {ba.Streams}  # the worker side decompressed every page
    assert manifest["counts"] == reference["counts"] and manifest["shards"] == reference["shards"]
    assert shard_bytes(tmp_path / "multi") == shard_bytes(tmp_path / "ref")
    assert list(iter_corpus(tmp_path / "multi")) == list(iter_corpus(tmp_path / "ref"))


def test_gensim_utf16_dump_builds_like_its_utf8_copy(tmp_path):
    """gensim's bgwiki sample is UTF-16 with a byte-order mark: one Cyrillic article."""
    try:
        sample = ba.default_dump_path()
    except CofeeError:
        pytest.skip("gensim not installed")
    utf16 = sample.with_name("bgwiki-latest-pages-articles-shortened.xml.bz2")
    utf8 = tmp_path / "bgwiki-utf8.xml"
    utf8.write_bytes(bz2.decompress(utf16.read_bytes()).decode("utf-16").encode("utf-8"))
    one = build_anchor_corpus(utf16, tmp_path / "utf16", AnchorBuildConfig(), progress=False)
    two = build_anchor_corpus(utf8, tmp_path / "utf8", AnchorBuildConfig(), progress=False)
    counts = one["counts"]
    assert (counts["pages"], counts["sentences"], counts["anchors"]) == (1, 31, 79)
    assert counts == two["counts"]
    assert shard_bytes(tmp_path / "utf16") == shard_bytes(tmp_path / "utf8")
    records = list(iter_corpus(tmp_path / "utf16"))
    assert records[0]["title"] == "Григориански календар"
    assert any("календар" in r["text"] for r in records)


@pytest.mark.parametrize("kind", ["header_only", "redirects_only", "nothing_kept"])
def test_a_build_that_keeps_nothing_fails_and_leaves_no_corpus(tmp_path, kind):
    data = FIXTURE.read_bytes()
    config = AnchorBuildConfig()
    dump = tmp_path / "dump.xml"
    if kind == "header_only":
        dump.write_bytes(data[: data.index(b"  <page>")] + b"</mediawiki>\n")
        expected = "no article page (namespace 0) in the dump (0 redirects, 0 pages of other namespaces)"
    elif kind == "redirects_only":
        text = data.decode("utf-8")
        pages = text.split("  <page>")
        dump.write_text(
            "  <page>".join(p for p in pages if "<redirect" in p or "<mediawiki" in p), encoding="utf-8"
        )
        if not dump.read_text(encoding="utf-8").rstrip().endswith("</mediawiki>"):
            dump.write_text(dump.read_text(encoding="utf-8") + "</mediawiki>\n", encoding="utf-8")
        expected = "no article page (namespace 0) in the dump (2 redirects"
    else:
        dump.write_bytes(data)
        config = AnchorBuildConfig(min_sentence_chars=1999)
        expected = "no sentence kept from 3 article pages"
    for workers in (1, 2):
        with pytest.raises(InputFileError) as info:
            build_anchor_corpus(dump, tmp_path / "out", config, num_workers=workers, progress=False)
        assert info.value.path == str(dump) and expected in str(info.value) and "\n" not in str(info.value)
        assert not (tmp_path / "out").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.xml"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_later_build_removes_the_temp_folders_of_dead_builds_only(tmp_path):
    from cofee.utils import io

    host = io._host_tag()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folders = {
            "dead": tmp_path / f".corpus.{host}-{_dead_pid()}.abc_12.tmp",
            "live": tmp_path / f".corpus.{host}-{live.pid}.abc_12.tmp",
            "mine": tmp_path / f".corpus.{host}-{os.getpid()}.abc_12.tmp",
            "old_legacy": tmp_path / ".corpus.k2j4_x9a.tmp",
            "new_legacy": tmp_path / ".corpus.q2j4_x9a.tmp",
            "old_other_host": tmp_path / ".corpus.elsewhere-1.abc_12.tmp",
            "new_other_host": tmp_path / ".corpus.elsewhere-2.abc_12.tmp",
            "other_corpus": tmp_path / f".corpus.x.{host}-{_dead_pid()}.abc_12.tmp",
        }
        day_ago = time.time() - 2 * io.STALE_TEMP_SECONDS
        for name, folder in folders.items():
            folder.mkdir()
            (folder / "shard-00000.jsonl").write_text("{}\n", encoding="utf-8")
            if name.startswith("old_"):
                os.utime(folder / "shard-00000.jsonl", (day_ago, day_ago))
                os.utime(folder, (day_ago, day_ago))
        build(tmp_path / "corpus")
        left = {name for name, folder in folders.items() if folder.exists()}
        assert left == {"live", "mine", "new_legacy", "new_other_host", "other_corpus"}
        assert remove_stale_temp_dirs(tmp_path / "corpus") == []
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temp_dirs(tmp_path / "corpus") == [folders["live"]]


def test_the_temp_folder_of_a_killed_build_is_removed_by_the_next_build(tmp_path):
    code = (
        "import sys, time\n"
        "from cofee.utils.io import atomic_directory\n"
        "with atomic_directory(sys.argv[1]) as tmp:\n"
        "    (tmp / 'shard-00000.jsonl').write_text('half')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "corpus")], stdout=subprocess.PIPE, text=True
    )
    try:
        left = Path(child.stdout.readline().strip())
        assert left.is_dir() and left.name.startswith(".corpus.") and left.name.endswith(".tmp")
        # a live build's folder is never taken away
        with atomic_directory(tmp_path / "other"):
            pass
        assert remove_stale_temp_dirs(tmp_path / "corpus") == [] and left.is_dir()
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
    assert left.is_dir()
    build(tmp_path / "corpus")
    assert not left.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "other"]
