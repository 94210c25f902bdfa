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

Iterating a ``DumpReader`` does both in turn; memory holds one chunk, whatever the dump size. Every
failure (truncated or corrupt compression, malformed XML, empty file, not a MediaWiki export) is an
``InputFileError`` naming the file, and the line in the whole file when the XML parser knows it.
Dumps are UTF-8 (MediaWiki writes nothing else): chunks are parsed without the XML declaration.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from cofee.utils.errors import InputFileError

__all__ = ["Page", "Chunk", "DumpReader", "PageParser", "dump_progress_bar", "iter_pages", "CHUNK_BYTES"]

CHUNK_BYTES = 1 << 18  # decompressed XML per chunk: per-chunk costs stay ~1%, workers stay balanced
_READ_BYTES = 1 << 18
_PAGE_OPEN, _PAGE_CLOSE = b"<page>", b"</page>"
_POSITION_SUFFIX_RE = re.compile(r":\s*line \d+, column \d+$")


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


@contextlib.contextmanager
def _input_errors(path: Path, first_line: int = 1):
    """Turn a decompression or XML error into the one-line ``InputFileError``."""
    try:
        yield
    except ET.ParseError as exc:
        line, column = getattr(exc, "position", (None, None))
        message = _POSITION_SUFFIX_RE.sub("", str(exc))
        if message.startswith("no element found") and (line, column) == (1, 0) and first_line == 1:
            raise InputFileError(path, "empty file: no XML content") from None
        if line is not None:
            line += first_line - 1  # a chunk's first line is line 1 for its parser
        raise InputFileError(path, f"malformed XML ({message})", line=line) from None
    except EOFError:
        raise InputFileError(
            path, "truncated compressed file: the stream ends before its end marker"
        ) from None
    except OSError as exc:  # includes gzip.BadGzipFile
        raise InputFileError(path, f"corrupt compressed data ({exc})") from None


class PageParser:
    """Parses the pages of one chunk; small and picklable, so each worker process holds one."""

    def __init__(self, path: Path, uri: str, namespaces: dict[int, str], wanted: frozenset[int]):
        self.path = path
        self.namespaces = namespaces
        self.wanted = wanted
        # No newline in the stand-in root, so chunk line n is line n of the parsed text.
        escaped = uri.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
        self._root = f'<mediawiki xmlns="{escaped}">'.encode() if uri else b"<mediawiki>"
        uri = "{" + uri + "}" if uri else ""
        self._page, self._title, self._ns, self._id = uri + "page", uri + "title", uri + "ns", uri + "id"
        self._redirect, self._revision, self._text = uri + "redirect", uri + "revision", uri + "text"

    def parse(self, chunk: Chunk) -> tuple[list[Page], int]:
        """The wanted pages of ``chunk`` and the number of other pages skipped."""
        with _input_errors(self.path, chunk.line):
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
    file on disk consumed so far (for progress bars).
    """

    def __init__(self, path: str | Path, namespaces: tuple[int, ...] = (0,), chunk_bytes: int = CHUNK_BYTES):
        self.path = Path(path)
        self.wanted = frozenset(namespaces)
        self.chunk_bytes = chunk_bytes
        self.namespaces: dict[int, str] = {}
        self.skipped = 0
        self._uri: str | None = None  # namespace URI of the root element, once seen
        self._raw: BinaryIO | None = None

    def position(self) -> int:
        raw = self._raw
        if raw is None or raw.closed:
            return 0
        try:
            return raw.tell()
        except (OSError, ValueError):
            return 0

    def page_parser(self) -> PageParser:
        assert self._uri is not None, "page_parser() before the header was read"
        return PageParser(self.path, self._uri, dict(self.namespaces), self.wanted)

    def __iter__(self) -> Iterator[Page]:
        parser = None
        for chunk in self.chunks():
            parser = parser or self.page_parser()
            pages, skipped = parser.parse(chunk)
            self.skipped += skipped
            yield from pages

    def chunks(self) -> Iterator[Chunk]:
        """The dump's pages as ``Chunk``s of whole ``<page>`` elements, in file order."""
        raw, stream = self._open()
        self._raw = raw
        try:
            with _input_errors(self.path):
                yield from self._cut(stream)
        finally:
            stream.close()
            raw.close()

    def _cut(self, stream: BinaryIO) -> Iterator[Chunk]:
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
            header.close()
            self._header_events(header)
            return
        line = 1 + buffer.count(b"\n", 0, body)
        if self._uri is None:
            raise InputFileError(
                self.path, "not a MediaWiki XML export (<page> before any root element)", line=line
            )
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
        yield Chunk(buffer, line, True)

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
