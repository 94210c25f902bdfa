"""Cutting the dump into chunks of whole pages (main process) and parsing a chunk (worker side)."""

from __future__ import annotations

import bz2
import pickle
from pathlib import Path

import pytest

from cofee.data.wiki import dump as dump_module
from cofee.data.wiki.dump import DumpReader, iter_pages
from cofee.utils.errors import InputFileError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "wiki" / "mini.xml"
DATA = FIXTURE.read_bytes()


def _chunks(path, chunk_bytes):
    reader = DumpReader(path, chunk_bytes=chunk_bytes)
    return reader, list(reader.chunks())


@pytest.mark.parametrize("read_bytes", [3, 7, 64, 1 << 18])
@pytest.mark.parametrize("chunk_bytes", [1, 300, 1000, 1 << 20])
def test_chunks_hold_whole_pages(tmp_path, monkeypatch, read_bytes, chunk_bytes):
    """Tiny reads split <page> and </page> across read() buffers; cuts still fall after </page>."""
    monkeypatch.setattr(dump_module, "_READ_BYTES", read_bytes)
    # a "</page>" in page text is escaped in the XML, so it must not be taken for a page end
    data = DATA.replace(b"Switzerland borders Germany.", b"Switzerland borders Germany. &lt;/page&gt;")
    assert data != DATA
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bz2.compress(data))
    reader, chunks = _chunks(path, chunk_bytes)
    header = data[: data.index(b"<page>")]
    assert header + b"".join(c.data for c in chunks) == data
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    offset = len(header)
    for chunk in chunks:
        assert chunk.line == data[:offset].count(b"\n") + 1
        assert chunk.data.lstrip().startswith(b"<page>") or chunk.last
        assert chunk.data.endswith(b"</page>") or chunk.last
        offset += len(chunk.data)
    if chunk_bytes == 1:  # one page a chunk, then the end of the document
        assert len(chunks) == data.count(b"<page>") + 1 and chunks[-1].data.strip() == b"</mediawiki>"
    if chunk_bytes == 1 << 20:
        assert len(chunks) == 1
    assert reader.namespaces[14] == "Category"
    pages = list(DumpReader(path, chunk_bytes=chunk_bytes))
    assert [p.title for p in pages] == ["São Paulo", "Brasil", "Zürich", "北京", "Tokyo (city)"]
    assert "Germany. </page>" in pages[2].text
    reference = tmp_path / "ref.xml"
    reference.write_bytes(data)
    assert pages == list(iter_pages(reference))


def test_page_parser_is_picklable_and_counts_skipped():
    reader, chunks = _chunks(FIXTURE, 1)
    parser = pickle.loads(pickle.dumps(reader.page_parser()))
    results = [parser.parse(chunk) for chunk in chunks]
    assert sum(skipped for _, skipped in results) == 2  # Talk: and Template: pages
    assert [len(pages) for pages, _ in results] == [1, 1, 0, 0, 1, 1, 1, 0]


@pytest.mark.parametrize("chunk_bytes", [1, 1000, 1 << 20])
def test_malformed_xml_in_a_later_chunk_names_the_file_line(tmp_path, chunk_bytes):
    text = DATA.decode("utf-8").replace("<title>北京</title>", "<title>北京</titel>")
    path = tmp_path / "bad.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        list(DumpReader(path, chunk_bytes=chunk_bytes))
    assert "malformed XML" in str(info.value) and str(path) in str(info.value)
    assert info.value.line == text[: text.index("</titel>")].count("\n") + 1


def test_end_of_document_is_checked(tmp_path):
    junk = tmp_path / "junk.xml"
    junk.write_bytes(DATA + b"<extra/>\n")
    with pytest.raises(InputFileError, match="malformed XML") as info:
        list(DumpReader(junk, chunk_bytes=1))
    assert info.value.line == DATA.count(b"\n") + 1
    cut = tmp_path / "cut.xml"  # ends right after a </page>, without </mediawiki>
    cut.write_bytes(DATA[: DATA.rindex(b"</page>") + len(b"</page>")])
    with pytest.raises(InputFileError, match="malformed XML"):
        list(DumpReader(cut, chunk_bytes=1))


def test_header_only_dump_and_wrong_roots(tmp_path):
    no_pages = tmp_path / "none.xml"
    no_pages.write_bytes(DATA[: DATA.index(b"  <page>")] + b"</mediawiki>\n")
    reader = DumpReader(no_pages)
    assert list(reader) == [] and reader.namespaces[6] == "File"
    other = tmp_path / "other.xml"
    other.write_bytes(b"<rss>\n" + DATA[DATA.index(b"  <page>") :].replace(b"</mediawiki>", b"</rss>"))
    with pytest.raises(InputFileError, match=r"not a MediaWiki XML export \(root element <rss>"):
        list(DumpReader(other))
    bare = tmp_path / "bare.xml"
    bare.write_bytes(b"\n<page><title>A</title></page>\n")
    with pytest.raises(InputFileError, match="not a MediaWiki XML export") as info:
        list(DumpReader(bare))
    assert info.value.line == 2
