"""Streaming the MediaWiki XML export, compressed or not, and its failure modes."""

from __future__ import annotations

import bz2
import codecs
import pickle
from pathlib import Path

import pytest

from cofee.data.wiki import dump as dump_module
from cofee.data.wiki.build_anchors import default_dump_path
from cofee.data.wiki.dump import DumpReader, Streams, detect_encoding, iter_pages, multistream_index_of
from cofee.utils.errors import InputFileError
from tests.support import write_multistream_dump

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


# -- multistream dumps with their index --------------------------------------------------------------
@pytest.mark.parametrize("pages_per_stream", [1, 2, 7])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 20])
@pytest.mark.parametrize(("header_pages", "footer_alone"), [(0, True), (0, False), (2, True)])
def test_multistream_with_index_gives_the_single_stream_pages(
    tmp_path, pages_per_stream, chunk_bytes, header_pages, footer_alone
):
    dump = write_multistream_dump(
        FIXTURE.read_bytes(),
        tmp_path,
        pages_per_stream=pages_per_stream,
        header_pages=header_pages,
        footer_alone=footer_alone,
    )
    assert multistream_index_of(dump) == tmp_path / "wiki-multistream-index.txt.bz2"
    reader = DumpReader(dump, chunk_bytes=chunk_bytes)
    chunks = list(reader.chunks())
    assert reader.multistream and reader.namespaces[14] == "Category"
    assert all(isinstance(c, Streams) for c in chunks)  # the main process decompressed only the header
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    if chunk_bytes == 1:  # one task per stream of pages (the footer's stream goes with the last)
        assert len(chunks) == -(-(7 - header_pages) // pages_per_stream) + (header_pages > 0)
    assert reader.position() == dump.stat().st_size
    reader = DumpReader(dump, chunk_bytes=chunk_bytes)
    assert list(reader) == list(iter_pages(FIXTURE)) and reader.skipped == 2


def test_multistream_without_its_index_is_read_as_one_stream(tmp_path):
    dump = write_multistream_dump(FIXTURE.read_bytes(), tmp_path, index=False)
    reader = DumpReader(dump)
    assert list(reader) == list(iter_pages(FIXTURE)) and not reader.multistream
    indexed = write_multistream_dump(FIXTURE.read_bytes(), tmp_path, stem="other")
    reader = DumpReader(indexed, index=None)  # told to ignore the index
    assert list(reader) == list(iter_pages(FIXTURE)) and not reader.multistream


def test_multistream_page_parser_decompresses_in_the_worker(tmp_path):
    dump = write_multistream_dump(FIXTURE.read_bytes(), tmp_path, pages_per_stream=1)
    reader = DumpReader(dump, chunk_bytes=1)
    tasks = list(reader.chunks())
    parser = pickle.loads(pickle.dumps(reader.page_parser()))
    # tasks parse in any order, each on its own (a worker seeks to its streams)
    results = [parser.parse(task) for task in reversed(tasks)][::-1]
    assert [p for pages, _ in results for p in pages] == list(iter_pages(FIXTURE))


def _multistream_error(dump) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        list(DumpReader(dump, chunk_bytes=1))
    assert "\n" not in str(info.value)
    return info.value


def test_multistream_failures_name_the_file_and_stream(tmp_path):
    data = FIXTURE.read_bytes()
    bad = data.replace("<title>Zürich</title>".encode(), "<title>Zürich</titel>".encode())
    dump = write_multistream_dump(bad, tmp_path, stem="bad", pages_per_stream=1)
    error = _multistream_error(dump)
    assert error.path == str(dump) and "malformed XML" in str(error) and "bz2 stream at byte" in str(error)
    dump = write_multistream_dump(data, tmp_path, stem="cut", pages_per_stream=1)
    packed = dump.read_bytes()
    dump.write_bytes(packed[:-5])  # the footer's stream loses its end
    assert "truncated" in str(_multistream_error(dump))
    index = tmp_path / "cut-multistream-index.txt.bz2"
    second = len(bz2.compress(data[: data.index(b"<page>")]))  # where the first stream of pages starts
    index.write_bytes(bz2.compress(b"%d:101:Sao Paulo\n" % (second + 3)))  # not where a stream starts
    error = _multistream_error(dump)
    assert error.path == str(dump) and "the index does not match the dump" in str(error)
    index.write_bytes(bz2.compress(b"99999999:101:Sao Paulo\n"))
    error = _multistream_error(dump)
    assert error.path == str(index) and "not the index of this dump" in str(error) and error.line == 1
    index.write_bytes(bz2.compress(b"no index here\n"))
    assert "not a multistream index" in str(_multistream_error(dump))
    index.write_bytes(b"not bz2 at all")
    assert _multistream_error(dump).path == str(index)


# -- encodings ---------------------------------------------------------------------------------------
DECLARED = b'<?xml version="1.0" encoding="%s"?>\n'


@pytest.mark.parametrize(
    ("codec", "prefix"),
    [
        ("utf-16", b""),  # Python's utf-16 writes a byte-order mark (little-endian here)
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-16-le", b""),  # no mark: told by the "<" that opens the document
        ("utf-32", b""),
        ("utf-8-sig", b""),
    ],
)
@pytest.mark.parametrize("read_bytes", [5, 1 << 18])
def test_dumps_in_unicode_encodings_read_as_utf8(tmp_path, monkeypatch, codec, prefix, read_bytes):
    monkeypatch.setattr(dump_module, "_READ_BYTES", read_bytes)
    text = FIXTURE.read_text(encoding="utf-8")
    for name, document in [("bare", text), ("declared", (DECLARED % b"UTF-16").decode() + text)]:
        if codec.startswith("utf-8") or codec.startswith("utf-32"):
            document = document.replace("UTF-16", codec.upper())
        path = tmp_path / f"{name}.xml.bz2"
        path.write_bytes(bz2.compress(prefix + document.encode(codec)))
        reader = DumpReader(path, chunk_bytes=300)
        pages = list(reader)
        assert pages == list(iter_pages(FIXTURE)), (codec, name)
        assert reader.namespaces[14] == "Category"


def test_declared_single_byte_encoding(tmp_path):
    text = FIXTURE.read_text(encoding="utf-8")  # what Latin-1 lacks becomes character references
    path = tmp_path / "latin1.xml"
    path.write_bytes(DECLARED % b"ISO-8859-1" + text.encode("latin-1", "xmlcharrefreplace"))
    assert "São".encode("latin-1") in path.read_bytes()
    reader = DumpReader(path, chunk_bytes=1)
    assert list(reader) == list(iter_pages(FIXTURE)) and reader.encoding == "iso8859-1"
    assert detect_encoding(DECLARED % b"us-ascii", path) == ("utf-8", 0)


def test_multistream_in_utf16(tmp_path):
    for header_pages in (0, 1):
        dump = write_multistream_dump(
            FIXTURE.read_bytes(),
            tmp_path,
            stem=f"h{header_pages}",
            header_pages=header_pages,
            encoding="utf-16-le",
            bom=codecs.BOM_UTF16_LE,
        )
        reader = DumpReader(dump, chunk_bytes=1)
        assert list(reader) == list(iter_pages(FIXTURE)) and reader.encoding == "utf-16-le"


def test_encoding_errors_are_one_line(tmp_path):
    unknown = tmp_path / "unknown.xml"
    unknown.write_bytes(DECLARED % b"klingon-8" + FIXTURE.read_bytes())
    error = _error(unknown)
    assert "unknown encoding 'klingon-8'" in str(error) and error.line == 1
    odd = tmp_path / "odd.xml"
    odd.write_bytes(codecs.BOM_UTF16_LE + FIXTURE.read_text(encoding="utf-8").encode("utf-16-le") + b"<")
    assert "not valid utf-16-le" in str(_error(odd))
    lying = tmp_path / "lying.xml"
    lying.write_bytes(DECLARED % b"UTF-16" + FIXTURE.read_bytes())
    assert "declared UTF-16" in str(_error(lying))


def test_gensim_utf16_sample_reads_its_cyrillic_article():
    path = default_dump_path().with_name("bgwiki-latest-pages-articles-shortened.xml.bz2")
    reader = DumpReader(path)
    pages = list(reader)
    assert reader.encoding == "utf-16-le" and reader.namespaces[14] == "Категория"
    assert [(p.title, p.redirect) for p in pages] == [("Григориански календар", None)]
    assert "Григориански календар" in pages[0].text
