"""Streaming reader of MediaWiki XML exports (``.xml``, ``.xml.bz2`` incl. multistream, ``.xml.gz``).

``xml.etree.ElementTree.iterparse`` with the root cleared after every page, so memory does not grow
with the dump. Only main-namespace (``ns == 0``) pages are yielded, redirects included (their
``redirect`` field is set); other namespaces are counted in ``DumpReader.skipped``. Every failure
(truncated or corrupt compression, malformed XML, empty file, not a MediaWiki export) is an
``InputFileError`` naming the file, and the line when the XML parser knows it.
"""

from __future__ import annotations

import bz2
import gzip
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from ..errors import InputFileError

__all__ = ["Page", "DumpReader", "iter_pages"]

_POSITION_SUFFIX_RE = re.compile(r":\s*line \d+, column \d+$")


class Page(NamedTuple):
    page_id: int
    ns: int
    title: str
    redirect: str | None
    text: str


class DumpReader:
    """Iterate the article pages of a dump; also exposes ``namespaces``, ``skipped`` and progress.

    ``namespaces`` ({key: name}) is filled from ``<siteinfo>`` before the first page is yielded.
    ``position()`` is the number of bytes of the file on disk consumed so far (for progress bars).
    """

    def __init__(self, path: str | Path, namespaces: tuple[int, ...] = (0,)):
        self.path = Path(path)
        self.wanted = frozenset(namespaces)
        self.namespaces: dict[int, str] = {}
        self.skipped = 0
        self._raw: BinaryIO | None = None

    def position(self) -> int:
        raw = self._raw
        if raw is None or raw.closed:
            return 0
        try:
            return raw.tell()
        except (OSError, ValueError):
            return 0

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

    def __iter__(self) -> Iterator[Page]:
        raw, stream = self._open()
        self._raw = raw
        try:
            yield from self._pages(stream)
        except ET.ParseError as exc:
            line, _column = getattr(exc, "position", (None, None))
            message = _POSITION_SUFFIX_RE.sub("", str(exc))
            if message.startswith("no element found") and line == 1 and _column == 0:
                raise InputFileError(self.path, "empty file: no XML content") from None
            raise InputFileError(self.path, f"malformed XML ({message})", line=line) from None
        except EOFError:
            raise InputFileError(
                self.path, "truncated compressed file: the stream ends before its end marker"
            ) from None
        except OSError as exc:  # includes gzip.BadGzipFile
            raise InputFileError(self.path, f"corrupt compressed data ({exc})") from None
        finally:
            stream.close()
            raw.close()

    def _pages(self, stream: BinaryIO) -> Iterator[Page]:
        context = ET.iterparse(stream, events=("start", "end"))
        root = None
        page_tag = siteinfo_tag = ""
        for event, elem in context:
            if root is None:
                root = elem
                tag = elem.tag
                uri = tag[: tag.index("}") + 1] if tag.startswith("{") else ""
                if tag[len(uri) :] != "mediawiki":
                    raise InputFileError(
                        self.path,
                        f"not a MediaWiki XML export (root element <{tag[len(uri) :]}>, expected <mediawiki>)",
                        line=1,
                    )
                page_tag, siteinfo_tag = uri + "page", uri + "siteinfo"
                t_title, t_ns, t_id = uri + "title", uri + "ns", uri + "id"
                t_redirect, t_revision, t_text = uri + "redirect", uri + "revision", uri + "text"
                t_namespace = uri + "namespaces/" + uri + "namespace"
                continue
            if event != "end":
                continue
            tag = elem.tag
            if tag == page_tag:
                title = elem.findtext(t_title) or ""
                ns_text = elem.findtext(t_ns)
                ns = int(ns_text) if ns_text and ns_text.strip().lstrip("-").isdigit() else None
                if ns is None:
                    ns = self._namespace_of(title)
                if ns not in self.wanted:
                    self.skipped += 1
                    root.clear()
                    continue
                id_text = elem.findtext(t_id) or ""
                page_id = int(id_text) if id_text.strip().isdigit() else -1
                redirect_elem = elem.find(t_redirect)
                redirect = None if redirect_elem is None else (redirect_elem.get("title") or "")
                revision = elem.find(t_revision)
                text = (revision.findtext(t_text) if revision is not None else None) or ""
                root.clear()
                yield Page(page_id, ns, title, redirect, text)
            elif tag == siteinfo_tag:
                for item in elem.iterfind(t_namespace):
                    key = item.get("key")
                    if key is not None and key.lstrip("-").isdigit():
                        self.namespaces[int(key)] = item.text or ""
                root.clear()
        if root is None:
            raise InputFileError(self.path, "empty file: no XML content")

    def _namespace_of(self, title: str) -> int:
        """Namespace of a page in an old dump without ``<ns>``: from its title prefix."""
        colon = title.find(":")
        if colon > 0:
            prefix = title[:colon].strip().lower()
            for key, name in self.namespaces.items():
                if name and name.lower() == prefix:
                    return key
        return 0


def iter_pages(path: str | Path) -> Iterator[Page]:
    """Yield ``Page(page_id, ns, title, redirect_target_or_None, wikitext)`` for article pages."""
    return iter(DumpReader(path))
