"""Streaming reader of MediaWiki XML exports (``.xml``, ``.xml.bz2`` incl. multistream, ``.xml.gz``).

Reading is split in two steps so that the costly one can run in worker processes:

* ``DumpReader.chunks()`` (cheap; one process): decompresses the file, parses the header before the
  first ``<page>`` once (root check, ``<siteinfo>`` namespaces) and cuts the rest of the XML byte
  stream into ``Chunk``s of whole pages: each ends at the first ``</page>`` after ``chunk_bytes`` and
  carries the file line it starts on. ``</page>`` cannot occur raw inside a page (text is escaped and
  dumps use no CDATA), so ``bytes.find`` is enough to find page ends.
* ``PageParser.parse(chunk)`` (picklable): parses one chunk inside a stand-in ``<mediawiki>`` root that
  has the namespace URI of the real one, and returns its main-namespace (``ns == 0``) pages, redirects
  included (their ``redirect`` field is set), and how many pages of other namespaces it skipped.

A **multistream** dump (``*-multistream.xml.bz2``) is a concatenation of independent bz2 streams of
about 100 pages each (the first holds the ``<mediawiki><siteinfo>`` header, the last may hold only
``</mediawiki>``); its index (``*-multistream-index.txt.bz2`` beside it, lines
``offset:page_id:title``) gives the byte offset of each stream of pages. With the index, ``chunks()``
decompresses only the header and yields ``Streams`` instead: byte ranges of whole streams,
~``chunk_bytes / 4`` compressed bytes each. ``PageParser.parse`` reads its range, decompresses it
(``bz2.BZ2Decompressor``, stream after stream until the range ends) and parses it, so each worker
decompresses its own streams and the main process only reads the index (one offset kept per stream).
Without an index (or for a plain ``.xml``, ``.bz2``, ``.gz``) the main process decompresses the
whole file as above; the pages, and so the corpus, are the same either way.

Iterating a ``DumpReader`` does both in turn; memory holds one chunk, whatever the dump size. Every
failure (truncated or corrupt compression, malformed XML, empty file, not a MediaWiki export, text
not valid in its encoding) is an ``InputFileError`` naming the file, and the line in the whole file
when the XML parser knows it (for a multistream dump: the stream's byte offset and the line in it).

The encoding is read from the XML itself: a byte-order mark (UTF-8, UTF-16, UTF-32), else the
``<?xml ... encoding="..."?>`` declaration, else UTF-8. MediaWiki writes UTF-8; a dump in another
encoding (gensim's UTF-16 ``bgwiki`` sample) is transcoded to UTF-8 as it is read, its mark and
declaration dropped, so chunks are always UTF-8 and parsed without a declaration.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import io
import logging
import re
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from cofee.utils.errors import InputFileError

__all__ = [
    "Page",
    "Chunk",
    "Streams",
    "DumpReader",
    "PageParser",
    "dump_progress_bar",
    "iter_pages",
    "detect_encoding",
    "multistream_index_of",
    "read_streams",
    "CHUNK_BYTES",
]

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 18  # decompressed XML per chunk: per-chunk costs stay ~1%, workers stay balanced
_READ_BYTES = 1 << 18
_HEAD_BYTES = 1024  # enough for a byte-order mark and an XML declaration
_COMPRESSION = 4  # rough bz2 ratio of dump XML: a Streams task is ~chunk_bytes / 4 compressed bytes
_PAGE_OPEN, _PAGE_CLOSE = b"<page>", b"</page>"
_POSITION_SUFFIX_RE = re.compile(r":\s*line \d+, column \d+$")
_UTF8 = "utf-8"


class Page(NamedTuple):
    page_id: int
    ns: int
    title: str
    redirect: str | None
    text: str


class Chunk(NamedTuple):
    data: bytes  # whole <page> elements (the last chunk also holds the end of the document)
    line: int  # line of the file that data starts on, for error messages
    last: bool


class Streams(NamedTuple):
    """Whole bz2 streams of a multistream dump: bytes ``start`` to ``end`` of the file (``end`` -1: to
    the end of the file, which also holds ``</mediawiki>``), decompressed by ``PageParser.parse``."""

    start: int
    end: int
    last: bool


# -- encodings -------------------------------------------------------------------------------------
_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, _UTF8),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_NO_BOM = (  # "<" in an encoding that is not ASCII-compatible, without a mark (XML 1.0, appendix F)
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00", "utf-16-le"),
    (b"\x00<", "utf-16-be"),
)
_DECLARATION_RE = re.compile(r"<\?xml\s[^>]*?\?>")
_ENCODING_RE = re.compile(r"""\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")


def detect_encoding(head: bytes, path: str | Path) -> tuple[str, int]:
    """``(codec, length of the byte-order mark)`` of an XML document that starts with ``head``: the
    mark, else the declaration's ``encoding``, else UTF-8 (ASCII is read as UTF-8, its superset)."""
    for mark, codec in _BOMS:
        if head.startswith(mark):
            return codec, len(mark)
    codec = next((c for prefix, c in _NO_BOM if head.startswith(prefix)), _UTF8)
    if codec != _UTF8:
        return codec, 0
    declaration = _DECLARATION_RE.match(head.decode("latin-1"))
    named = _ENCODING_RE.search(declaration.group()) if declaration else None
    if named is None:
        return _UTF8, 0
    try:
        codec = codecs.lookup(named.group(1)).name
    except LookupError:
        raise InputFileError(
            path, f"unknown encoding {named.group(1)!r} in the XML declaration", line=1
        ) from None
    if codec in ("utf-16", "utf-32"):  # declared so, yet the text starts ASCII-compatible: no such text
        raise InputFileError(path, f"declared {named.group(1)}, but the text is not {named.group(1)}", line=1)
    return (_UTF8 if codec == "ascii" else codec), 0


class _Prefixed:
    """``head`` (bytes already read) followed by the rest of ``inner``, read by ``read(size)``."""

    def __init__(self, head: bytes, inner: BinaryIO):
        self._head = head
        self._inner = inner

    def read(self, size: int) -> bytes:
        if self._head:
            block, self._head = self._head[:size], self._head[size:]
            return block
        return self._inner.read(size)


class _Transcoded(_Prefixed):
    """A document in ``codec`` read as UTF-8 bytes, without its byte-order mark and XML declaration
    (the declaration's line breaks are kept, so line numbers are those of the file)."""

    def __init__(self, head: bytes, inner: BinaryIO, codec: str, mark: int):
        self._decoder = codecs.getincrementaldecoder(codec)("strict")
        text = self._decoder.decode(head[mark:], final=False)
        if declaration := _DECLARATION_RE.match(text):
            text = "\n" * declaration.group().count("\n") + text[declaration.end() :]
        super().__init__(text.encode(_UTF8), inner)
        self._done = False

    def read(self, size: int) -> bytes:
        if self._head:
            return super().read(size)
        while not self._done:
            block = self._inner.read(size)
            self._done = not block
            if text := self._decoder.decode(block, final=self._done):
                return text.encode(_UTF8)
        return b""


def multistream_index_of(path: str | Path) -> Path | None:
    """The index beside a ``*-multistream.xml.bz2`` dump, ``*-multistream-index.txt[.bz2]``, if any."""
    path = Path(path)
    if not path.name.endswith("-multistream.xml.bz2"):
        return None
    stem = path.name[: -len(".xml.bz2")]
    for suffix in ("-index.txt.bz2", "-index.txt"):
        if (candidate := path.with_name(stem + suffix)).is_file():
            return candidate
    return None


def _stream_offsets(index: Path, size: int) -> array:
    """The distinct offsets of a multistream index, ascending: one 8-byte integer per stream."""
    offsets = array("q")
    previous = -1
    try:
        handle = bz2.open(index, "rb") if index.name.endswith(".bz2") else open(index, "rb")
    except OSError as exc:
        raise InputFileError(index, f"cannot open ({exc.strerror or exc})") from None
    with _input_errors(index), handle:
        for number, line in enumerate(handle, 1):
            head, colon, _ = line.partition(b":")
            if not line.strip():
                continue
            if not (colon and head.isdigit()):
                raise InputFileError(
                    index, "not a multistream index (lines are offset:page_id:title)", line=number
                )
            offset = int(head)
            if offset != previous:
                if offset < previous or offset >= size:
                    raise InputFileError(
                        index,
                        f"offset {offset} is out of order or past the end of the dump ({size} bytes): "
                        "not the index of this dump",
                        line=number,
                    )
                offsets.append(offset)
                previous = offset
    if not offsets:
        raise InputFileError(index, "empty multistream index")
    return offsets


def read_streams(path: Path, start: int, end: int, first_only: bool = False) -> bytes:
    """The decompressed bz2 streams in bytes ``start`` to ``end`` (-1: to the end) of ``path`` (with
    ``first_only``: only the stream at ``start``). Raises ``EOFError`` on a truncated stream and
    ``OSError`` on corrupt data, as ``bz2.BZ2File`` does."""
    with open(path, "rb") as handle:
        handle.seek(start)
        if first_only:
            decompressor = bz2.BZ2Decompressor()
            out = []
            while not decompressor.eof and (block := handle.read(_READ_BYTES)):
                out.append(decompressor.decompress(block))
            if not decompressor.eof:
                raise EOFError
            return b"".join(out)
        data = handle.read(end - start if end >= 0 else -1)
    out = []
    position = start
    while data:
        if not data.startswith(b"BZh"):
            raise OSError(f"no bz2 stream starts at byte {position}: the index does not match the dump")
        decompressor = bz2.BZ2Decompressor()
        out.append(decompressor.decompress(data))
        if not decompressor.eof:
            if end >= 0:  # an index offset cut a stream in two
                raise OSError(
                    f"the bz2 stream at byte {position} does not end by byte {end}, the next offset of"
                    " the index: the index does not match the dump"
                )
            raise EOFError
        position += len(data) - len(decompressor.unused_data)
        data = decompressor.unused_data
    return b"".join(out)


def _stream_blocks(path: Path, start: int, end: int) -> Iterator[bytes]:
    """``read_streams`` a block at a time: at most ``_READ_BYTES`` of compressed input is read, and
    of decompressed output returned, at once; raises as ``read_streams`` does."""
    with open(path, "rb") as handle:
        handle.seek(start)
        read = 0  # bytes read from start

        def more() -> bytes:
            nonlocal read
            size = _READ_BYTES if end < 0 else min(_READ_BYTES, end - start - read)
            block = handle.read(size) if size > 0 else b""
            read += len(block)
            return block

        data = more()
        while data:
            position = start + read - len(data)
            while len(data) < 3 and (extra := more()):
                data += extra
            if not data.startswith(b"BZh"):
                raise OSError(f"no bz2 stream starts at byte {position}: the index does not match the dump")
            decompressor = bz2.BZ2Decompressor()
            while not decompressor.eof:
                if decompressor.needs_input:
                    if not data and not (data := more()):
                        if end >= 0:  # an index offset cut a stream in two
                            raise OSError(
                                f"the bz2 stream at byte {position} does not end by byte {end}, the next"
                                " offset of the index: the index does not match the dump"
                            )
                        raise EOFError
                if block := decompressor.decompress(data, _READ_BYTES):
                    yield block
                data = b""
            data = decompressor.unused_data or more()


def _decoded_blocks(blocks: Iterator[bytes], codec: str) -> Iterator[bytes]:
    decoder = codecs.getincrementaldecoder(codec)("strict")
    for block in blocks:
        if text := decoder.decode(block):
            yield text.encode(_UTF8)
    if text := decoder.decode(b"", final=True):
        yield text.encode(_UTF8)


@contextlib.contextmanager
def _input_errors(path: Path, first_line: int = 1, stream: int | None = None):
    """Turn a decompression, decoding or XML error into the one-line ``InputFileError`` (``stream``:
    the byte offset of the multistream range read, whose lines are counted from its start)."""
    where = "" if stream is None else f" in the bz2 stream at byte {stream}"
    try:
        yield
    except ET.ParseError as exc:
        line, column = getattr(exc, "position", (None, None))
        message = _POSITION_SUFFIX_RE.sub("", str(exc))
        if stream is not None:
            at = f", line {line + first_line - 1} of the stream" if line is not None else ""
            raise InputFileError(path, f"malformed XML ({message}){where}{at}") from None
        if message.startswith("no element found") and (line, column) == (1, 0) and first_line == 1:
            raise InputFileError(path, "empty file: no XML content") from None
        if line is not None:
            line += first_line - 1  # a chunk's first line is line 1 for its parser
        raise InputFileError(path, f"malformed XML ({message})", line=line) from None
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"text not valid {exc.encoding} ({exc.reason}){where}") from None
    except EOFError:
        raise InputFileError(
            path, f"truncated compressed file: the stream ends before its end marker{where}"
        ) from None
    except OSError as exc:  # includes gzip.BadGzipFile
        raise InputFileError(path, f"corrupt compressed data ({exc}){where}") from None


class PageParser:
    """Parses the pages of one chunk; small and picklable, so each worker process holds one."""

    def __init__(
        self,
        path: Path,
        uri: str,
        namespaces: dict[int, str],
        wanted: frozenset[int],
        encoding: str = _UTF8,
        chunk_bytes: int = CHUNK_BYTES,
    ):
        self.path = path
        self.namespaces = namespaces
        self.wanted = wanted
        self.chunk_bytes = chunk_bytes  # XML parsed at a time out of Streams
        self.encoding = encoding  # of the file: a Chunk is UTF-8 already, Streams are decoded here
        # No newline in the stand-in root, so chunk line n is line n of the parsed text.
        escaped = uri.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
        self._root = f'<mediawiki xmlns="{escaped}">'.encode() if uri else b"<mediawiki>"
        uri = "{" + uri + "}" if uri else ""
        self._page, self._title, self._ns, self._id = uri + "page", uri + "title", uri + "ns", uri + "id"
        self._redirect, self._revision, self._text = uri + "redirect", uri + "revision", uri + "text"

    def parse(self, chunk: Chunk | Streams) -> tuple[list[Page], int]:
        """The wanted pages of ``chunk`` and the number of other pages skipped."""
        if isinstance(chunk, Streams):
            pages: list[Page] = []
            skipped = 0
            for part_pages, part_skipped in self.iter_parse(chunk):
                pages += part_pages
                skipped += part_skipped
            return pages, skipped
        return self._parse(chunk)

    def iter_parse(self, chunk: Chunk | Streams) -> Iterator[tuple[list[Page], int]]:
        """``parse`` in parts of about ``chunk_bytes`` of XML each: a stream of ~100 pages is
        decompressed, decoded and parsed a part at a time, so memory holds one part, not the stream."""
        if not isinstance(chunk, Streams):
            yield self._parse(chunk)
            return
        stream = chunk.start
        blocks = _stream_blocks(self.path, chunk.start, chunk.end)
        with _input_errors(self.path, stream=stream):
            if self.encoding != _UTF8:
                blocks = _decoded_blocks(blocks, self.encoding)
            buffer = b""
            line = 1
            skip_header = chunk.start == 0  # the header's own stream is indexed: keep only its pages
            start = max(0, self.chunk_bytes - len(_PAGE_CLOSE))
            for block in blocks:
                buffer += block
                if skip_header:
                    first = buffer.find(_PAGE_OPEN)
                    if first < 0:
                        buffer = buffer[-len(_PAGE_OPEN) :]
                        continue
                    buffer, skip_header = buffer[first:], False
                while (cut := buffer.find(_PAGE_CLOSE, start)) >= 0:
                    cut += len(_PAGE_CLOSE)
                    yield self._parse(Chunk(buffer[:cut], line, False), stream)
                    line += buffer.count(b"\n", 0, cut)
                    buffer = buffer[cut:]
        if skip_header:
            buffer = b""
        if chunk.last or buffer.strip():
            yield self._parse(Chunk(buffer, line, chunk.last), stream)

    def _parse(self, chunk: Chunk, stream: int | None = None) -> tuple[list[Page], int]:
        with _input_errors(self.path, chunk.line, stream):
            # the last chunk brings the real </mediawiki>, so trailing junk is still an error
            root = ET.fromstring(self._root + chunk.data + (b"" if chunk.last else b"</mediawiki>"))
        pages: list[Page] = []
        skipped = 0
        for elem in root.iter(self._page):
            title = elem.findtext(self._title) or ""
            ns_text = elem.findtext(self._ns)
            ns = int(ns_text) if ns_text and ns_text.strip().lstrip("-").isdigit() else None
            if ns is None:
                ns = self._namespace_of(title)
            if ns not in self.wanted:
                skipped += 1
                continue
            id_text = elem.findtext(self._id) or ""
            page_id = int(id_text) if id_text.strip().isdigit() else -1
            redirect_elem = elem.find(self._redirect)
            redirect = None if redirect_elem is None else (redirect_elem.get("title") or "")
            revision = elem.find(self._revision)
            text = (revision.findtext(self._text) if revision is not None else None) or ""
            pages.append(Page(page_id, ns, title, redirect, text))
        return pages, skipped

    def _namespace_of(self, title: str) -> int:
        """Namespace of a page in an old dump without ``<ns>``: from its title prefix."""
        colon = title.find(":")
        if colon > 0:
            prefix = title[:colon].strip().lower()
            for key, name in self.namespaces.items():
                if name and name.lower() == prefix:
                    return key
        return 0


class DumpReader:
    """Iterate the article pages of a dump; also exposes ``namespaces``, ``skipped`` and progress.

    ``namespaces`` ({key: name}) is filled from ``<siteinfo>`` before the first chunk or page is
    yielded, and ``page_parser()`` works from then on. ``position()`` is the number of bytes of the
    file on disk consumed so far (for progress bars). ``index``: the multistream index; ``"auto"``
    finds it beside a ``*-multistream.xml.bz2`` dump, ``None`` reads the dump as one stream.
    ``multistream`` tells, once ``chunks()`` started, whether the index is used.
    """

    def __init__(
        self,
        path: str | Path,
        namespaces: tuple[int, ...] = (0,),
        chunk_bytes: int = CHUNK_BYTES,
        index: str | Path | None = "auto",
    ):
        self.path = Path(path)
        self.wanted = frozenset(namespaces)
        self.chunk_bytes = chunk_bytes
        self.index = multistream_index_of(self.path) if index == "auto" else (Path(index) if index else None)
        self.multistream = False
        self.namespaces: dict[int, str] = {}
        self.encoding = _UTF8
        self.skipped = 0
        self._uri: str | None = None  # namespace URI of the root element, once seen
        self._raw: BinaryIO | None = None
        self._position = 0  # multistream: the end of the last range handed out

    def position(self) -> int:
        if self.multistream:
            return self._position
        raw = self._raw
        if raw is None or raw.closed:
            return 0
        try:
            return raw.tell()
        except (OSError, ValueError):
            return 0

    def page_parser(self) -> PageParser:
        assert self._uri is not None, "page_parser() before the header was read"
        return PageParser(
            self.path, self._uri, dict(self.namespaces), self.wanted, self.encoding, self.chunk_bytes
        )

    def __iter__(self) -> Iterator[Page]:
        parser = None
        for chunk in self.chunks():
            parser = parser or self.page_parser()
            pages, skipped = parser.parse(chunk)
            self.skipped += skipped
            yield from pages

    def chunks(self) -> Iterator[Chunk | Streams]:
        """The dump's pages in file order: ``Chunk``s of whole ``<page>`` elements, or for a multistream
        dump with its index, ``Streams`` (whole bz2 streams, decompressed by ``PageParser.parse``)."""
        raw, stream = self._open()
        self._raw = raw
        if self.index is not None and isinstance(stream, bz2.BZ2File):
            stream.close()
            raw.close()
            self.multistream = True
            yield from self._streams()
            return
        try:
            with _input_errors(self.path):
                yield from self._cut(self._decoded(stream))
        finally:
            stream.close()
            raw.close()

    def _decoded(self, stream: BinaryIO):
        """``stream`` as UTF-8 bytes, whatever the encoding the XML declares (``self.encoding``)."""
        head = stream.read(_HEAD_BYTES)
        self.encoding, mark = detect_encoding(head, self.path)
        if self.encoding == _UTF8:
            return _Prefixed(head, stream)
        log.info("%s is %s: transcoded to UTF-8 as it is read", self.path, self.encoding)
        return _Transcoded(head, stream, self.encoding, mark)

    def _streams(self) -> Iterator[Streams]:
        assert self.index is not None
        size = self.path.stat().st_size
        offsets = _stream_offsets(self.index, size)
        log.info("%s: multistream, %d streams of pages in %s", self.path, len(offsets), self.index)
        first = offsets[0]
        with _input_errors(self.path, stream=0 if first else None):
            header = read_streams(self.path, 0, first, first_only=first == 0)
        with _input_errors(self.path):  # pages in the header's streams (not indexed) are cut as usual
            yield from self._cut(self._decoded(io.BytesIO(header)), final=False, pages=first > 0)
        target = max(1, self.chunk_bytes // _COMPRESSION)
        start = first
        for i in range(1, len(offsets) + 1):
            end = offsets[i] if i < len(offsets) else size
            if end - start >= target or i == len(offsets):
                last = i == len(offsets)
                self._position = end
                yield Streams(start, -1 if last else end, last)
                start = end

    def _cut(self, stream, final: bool = True, pages: bool = True) -> Iterator[Chunk]:
        """Parse the header, then cut the pages into chunks. ``final``: ``stream`` holds the whole
        document (else only its start, the header of a multistream dump); ``pages``: yield them."""
        # The header: fed to a pull parser as it arrives, so a wrong root fails on the first block.
        header = ET.XMLPullParser(events=("start", "end"))
        buffer = b""
        fed = 0
        body = -1  # offset of the first <page>
        while body < 0 and (block := stream.read(_READ_BYTES)):
            buffer += block
            body = buffer.find(_PAGE_OPEN, fed)
            # keep a tail that may be the start of a <page> split across reads
            end = body if body >= 0 else max(fed, len(buffer) - len(_PAGE_OPEN))
            header.feed(buffer[fed:end])
            fed = end
            self._header_events(header)
        if body < 0:  # no page at all: the whole file is the header, which must be complete
            header.feed(buffer[fed:])
            if final:
                header.close()
            self._header_events(header)
            if not final and self._uri is None:
                raise InputFileError(
                    self.path, "not a MediaWiki XML export (no <mediawiki> root in its first stream)"
                )
            return
        line = 1 + buffer.count(b"\n", 0, body)
        if self._uri is None:
            raise InputFileError(
                self.path, "not a MediaWiki XML export (<page> before any root element)", line=line
            )
        if not pages:
            return
        buffer = buffer[body:]
        start = max(0, self.chunk_bytes - len(_PAGE_CLOSE))
        while True:
            # cut at the first page end past chunk_bytes; one read may hold several chunks
            while (cut := buffer.find(_PAGE_CLOSE, start)) >= 0:
                cut += len(_PAGE_CLOSE)
                yield Chunk(buffer[:cut], line, False)
                line += buffer.count(b"\n", 0, cut)
                buffer = buffer[cut:]
            if not (block := stream.read(_READ_BYTES)):
                break
            buffer += block
        if final or buffer.strip():
            yield Chunk(buffer, line, final)

    def _header_events(self, header: ET.XMLPullParser) -> None:
        for event, elem in header.read_events():
            tag = elem.tag
            prefix = tag[: tag.index("}") + 1] if tag.startswith("{") else ""
            if self._uri is None:  # the first event is the root's start
                if tag[len(prefix) :] != "mediawiki":
                    raise InputFileError(
                        self.path,
                        f"not a MediaWiki XML export (root element <{tag[len(prefix) :]}>, expected <mediawiki>)",
                        line=1,
                    )
                self._uri = prefix[1:-1]
            elif event == "end" and tag == prefix + "siteinfo":
                for item in elem.iterfind(prefix + "namespaces/" + prefix + "namespace"):
                    key = item.get("key")
                    if key is not None and key.lstrip("-").isdigit():
                        self.namespaces[int(key)] = item.text or ""

    def _open(self) -> tuple[BinaryIO, BinaryIO]:
        try:
            raw = open(self.path, "rb")
        except FileNotFoundError:
            raise InputFileError(self.path, "file not found") from None
        except OSError as exc:
            raise InputFileError(self.path, f"cannot open ({exc.strerror})") from None
        magic = raw.read(3)
        raw.seek(0)
        if magic == b"BZh":
            stream: BinaryIO = bz2.BZ2File(raw)  # reads concatenated (multistream) streams too
        elif magic[:2] == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=raw)
        else:
            stream = raw
        return raw, stream


def dump_progress_bar(path: str | Path, desc: str):
    """A tqdm bar over the bytes of the dump file on disk (fed from ``DumpReader.position()``)."""
    import sys

    from tqdm import tqdm

    return tqdm(
        total=Path(path).stat().st_size,
        unit="B",
        unit_scale=True,
        unit_divisor=1 << 20,
        desc=desc,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def iter_pages(path: str | Path) -> Iterator[Page]:
    """Yield ``Page(page_id, ns, title, redirect_target_or_None, wikitext)`` for article pages."""
    return iter(DumpReader(path))
