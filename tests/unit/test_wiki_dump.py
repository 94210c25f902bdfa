"""Streaming the MediaWiki XML export, compressed or not, and its failure modes."""

from __future__ import annotations

import bz2
from pathlib import Path

import pytest

from cofee.data.wiki.dump import DumpReader, iter_pages
from cofee.utils.errors import InputFileError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "wiki" / "mini.xml"


def test_reads_articles_and_redirects_skips_other_namespaces():
    reader = DumpReader(FIXTURE)
    pages = list(reader)
    assert [(p.page_id, p.ns, p.title, p.redirect) for p in pages] == [
        (101, 0, "São Paulo", None),
        (102, 0, "Brasil", "Brazil"),
        (105, 0, "Zürich", None),
        (106, 0, "北京", None),
        (107, 0, "Tokyo (city)", "Tokyo"),
    ]
    assert reader.skipped == 2  # Talk: and Template: pages
    assert reader.namespaces[6] == "File" and reader.namespaces[14] == "Category"
    assert pages[0].text.startswith("{{Infobox settlement")
    assert '<ref name="ibge">' in pages[0].text  # XML entities decoded once


def test_bz2_and_multistream_bz2(tmp_path):
    data = FIXTURE.read_bytes()
    single = tmp_path / "a.xml.bz2"
    single.write_bytes(bz2.compress(data))
    cut = data.index(b"  <page>", data.index("<title>Zürich".encode()) - 200)
    multi = tmp_path / "multi.xml.bz2"
    multi.write_bytes(bz2.compress(data[:cut]) + bz2.compress(data[cut:]))
    expected = list(iter_pages(FIXTURE))
    assert list(iter_pages(single)) == expected
    assert list(iter_pages(multi)) == expected


def _error(path) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        list(iter_pages(path))
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_truncated_bz2(tmp_path):
    packed = bz2.compress(FIXTURE.read_bytes() * 1)
    path = tmp_path / "cut.xml.bz2"
    path.write_bytes(packed[: len(packed) // 2])
    assert "truncated" in str(_error(path))


def test_corrupt_bz2(tmp_path):
    packed = bytearray(bz2.compress(FIXTURE.read_bytes()))
    packed[60:80] = b"\x00" * 20
    path = tmp_path / "bad.xml.bz2"
    path.write_bytes(bytes(packed))
    assert "corrupt" in str(_error(path)) or "truncated" in str(_error(path))


def test_malformed_xml_names_the_line(tmp_path):
    path = tmp_path / "bad.xml"
    text = FIXTURE.read_text(encoding="utf-8").replace("<title>Zürich</title>", "<title>Zürich</titel>")
    path.write_text(text, encoding="utf-8")
    error = _error(path)
    assert "malformed XML" in str(error)
    assert error.line == text[: text.index("</titel>")].count("\n") + 1


def test_xml_cut_mid_page(tmp_path):
    path = tmp_path / "cut.xml"
    data = FIXTURE.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    error = _error(path)
    assert "malformed XML" in str(error) and error.line is not None


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    assert "empty" in str(_error(empty))
    empty_bz2 = tmp_path / "empty.xml.bz2"
    empty_bz2.write_bytes(bz2.compress(b""))
    assert "empty" in str(_error(empty_bz2))


def test_not_a_mediawiki_export(tmp_path):
    path = tmp_path / "other.xml"
    path.write_text("<?xml version='1.0'?>\n<rss><channel/></rss>\n", encoding="utf-8")
    assert "not a MediaWiki XML export" in str(_error(path))


def test_missing_file(tmp_path):
    assert "not found" in str(_error(tmp_path / "nope.xml"))
