"""Build the Wikipedia anchor corpus (stage-1 data of CoFEE) from a MediaWiki XML dump.

Output folder (written atomically: a failure leaves neither a manifest nor half output, and an
existing good corpus stays as it was)::

    shard-00000.jsonl   one sentence a line:
                        {"page_id": int, "title": str, "text": str,
                         "spans": [[start, end, target, kind], ...]}   kind: anchor | repeat | title
    ...
    manifest.json       format, version, input (path, sha256, bytes), config, build_hash, counts,
                        shards, seconds

How it runs (memory stays flat whatever the dump size):

* The main process only decompresses the dump and cuts it into chunks of whole ``<page>`` elements
  (``DumpReader.chunks``, ~256 KB of XML each; the header is parsed once there, for the namespaces).
  A multistream dump with its index (``*-multistream.xml.bz2`` beside ``*-multistream-index.txt.bz2``)
  is not even decompressed there: a task is then a byte range of whole bz2 streams (``Streams``),
  which the worker decompresses itself, so decompression no longer limits the build.
  Parsing the chunk's XML, splitting off redirects and cleaning the articles all happen in
  ``_process_chunk_with``, which returns the sentence lines, counts and the chunk's redirects.
* With ``num_workers > 1`` that runs in a process pool (``fork`` on Linux, else ``spawn``: see
  ``start_method`` in cofee.data.ordered_pool), ``apply_async`` into a bounded queue of in-flight chunks, at most
  ``2 x num_workers``; results are taken back in submission order, so the output is the same for
  every ``num_workers`` and start method. The main process keeps
  only the serial work: decompressing, cutting, writing lines, filling the redirect map. With
  ``num_workers=1`` the same function runs in the main process, with no pool. A plain ``imap`` is
  not used because its feeder thread pulls the whole input without bound and turns a dump error into
  a pickled exception from a worker. A worker's XML error names the line in the whole file (each
  chunk carries its first line); when the main process hits a dump error, the chunks before it are
  finished first, so an earlier error wins, as in a serial read.
* Redirects are resolved at write time: pass 1 writes the shards with link targets as written
  (normalised) and collects the redirect map, ``{normalised redirect title: target}``. Its size is
  proportional to the number of redirect pages (about 10M titles, ~1-2 GB as a dict, for all of
  enwiki), so it is kept on disk, in an SQLite file of the temporary output folder
  (``RedirectStore``), removed once pass 2 is done. Pass 2 (cofee.data.wiki.redirect_pass) rewrites
  each shard, replacing targets that are redirects (chains followed up to 8 hops), in blocks of lines
  that go to pass 1's worker processes (one pool for both passes), each reading the store itself.
  This avoids decompressing and parsing the dump twice, which costs more than re-reading the
  (smaller) output.

A build that yields no article page, no sentence or no span is an ``InputFileError`` naming the dump
(a wrong file, a wrong namespace, settings that keep nothing), and leaves no corpus.

Span ``target``: the linked article (normalised title, redirects resolved); for ``title`` spans the
page's own title. ``min_anchors_per_sentence`` counts spans of every kind.
"""

from __future__ import annotations

import collections
import ctypes
import importlib.util
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cofee.config import AnchorBuildConfig
from cofee.data.built_data import ShardWriter, iter_shard_records, read_manifest, up_to_date
from cofee.data.ordered_pool import OrderedPool, SharedPool, start_pool
from cofee.data.wiki import redirect_pass
from cofee.data.wiki.dump import CHUNK_BYTES, Chunk, DumpReader, PageParser, Streams, dump_progress_bar
from cofee.data.wiki.redirect_pass import resolve_redirects as _resolve_redirects
from cofee.data.wiki.redirect_store import RedirectStore
from cofee.data.wiki.sentences import split_sentences
from cofee.data.wiki.wikitext import WikitextCleaner, normalize_title
from cofee.utils.errors import CofeeError, ConfigError, InputFileError
from cofee.utils.io import atomic_directory, atomic_write_json, sha256_file, stable_hash

__all__ = [
    "AnchorBuildConfig",
    "build_anchor_corpus",
    "iter_corpus",
    "load_manifest",
    "default_dump_path",
    "process_page",
]

log = logging.getLogger(__name__)

FORMAT = "cofee-anchor-corpus"
VERSION = 1
KINDS = ("anchor", "repeat", "title")
GENSIM_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_CHUNK_BYTES = CHUNK_BYTES  # decompressed XML per chunk, one task of a worker (tests shrink it)
_REDIRECT_STORE = "redirects.sqlite"  # in the temporary output folder, removed before it is renamed
# "Word" characters that are not CJK: a repeat/title match must not touch one of these, so
# "York" never matches inside "Yorkshire"; CJK text (no spaces) needs no boundary.
_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
_LEFT_EDGE = rf"(?<![^\W{_CJK}])"
_RIGHT_EDGE = rf"(?![^\W{_CJK}])"


def _starts_capitalised(surface: str) -> bool:
    first = surface[0]
    return first.isupper() or (first.isalpha() and first.lower() == first.upper())


# -- one page ------------------------------------------------------------------------------------
def _repeat_spans(text: str, anchors: list[tuple[int, int, str, str]], title: str, capitalised_only: bool):
    """Unlinked later mentions of the page's anchor surfaces, and mentions of its title."""
    wanted: dict[str, tuple[str, str, int]] = {}  # surface -> (target, kind, earliest start)
    base_title = re.sub(r"\s*\([^()]*\)$", "", title).strip()
    for surface in (title, base_title):
        if len(surface) >= 2:
            wanted.setdefault(surface, (title, "title", 0))
    for start, end, target, _kind in anchors:
        surface = text[start:end]
        if surface not in wanted:
            wanted[surface] = (target, "repeat", end)
    candidates = [
        s
        for s in wanted
        if len(s) >= 2 and any(c.isalpha() for c in s) and (not capitalised_only or _starts_capitalised(s))
    ]
    if not candidates:
        return anchors
    candidates.sort(key=len, reverse=True)
    pattern = re.compile(_LEFT_EDGE + "(?:" + "|".join(map(re.escape, candidates)) + ")" + _RIGHT_EDGE)
    spans = list(anchors)
    gap_start = 0
    for start, end in [(s, e) for s, e, _, _ in anchors] + [(len(text), len(text))]:
        for m in pattern.finditer(text, gap_start, start):
            if m.end() < len(text) and m.end() == start and text[start].isalnum():
                continue
            target, kind, earliest = wanted[m.group()]
            if m.start() >= earliest:
                spans.append((m.start(), m.end(), target, kind))
        gap_start = end
    spans.sort()
    return spans


def process_page(
    page_id: int, title: str, wikitext: str, cleaner: WikitextCleaner, config: AnchorBuildConfig
) -> tuple[list[str], collections.Counter]:
    """Clean, mark and split one page; return its sentence JSON lines and span counts."""
    text, links = cleaner.clean(wikitext)
    spans = [(s, e, t, "anchor") for s, e, t in links]
    if config.capitalised_only:
        spans = [sp for sp in spans if _starts_capitalised(text[sp[0]])]
    if config.mark_repeats and text:
        spans = _repeat_spans(text, spans, normalize_title(title), config.capitalised_only)
    counts: collections.Counter = collections.Counter()
    lines: list[str] = []
    span_index = 0
    n_spans = len(spans)
    for start, end in split_sentences(text, spans):
        while span_index < n_spans and spans[span_index][0] < start:
            span_index += 1
        inside = []
        while span_index < n_spans and spans[span_index][1] <= end:
            s, e, target, kind = spans[span_index]
            inside.append([s - start, e - start, target, kind])
            span_index += 1
        if len(inside) < config.min_anchors_per_sentence:
            continue
        if not config.min_sentence_chars <= end - start <= config.max_sentence_chars:
            continue
        for span in inside:
            counts[span[3] + "s"] += 1
        counts["sentences"] += 1
        lines.append(
            json.dumps(
                {"page_id": page_id, "title": title, "text": text[start:end], "spans": inside},
                ensure_ascii=False,
            )
        )
    return lines, counts


def _process_batch_with(batch, cleaner, config):
    lines: list[str] = []
    counts: collections.Counter = collections.Counter()
    for page_id, title, wikitext in batch:
        page_lines, page_counts = process_page(page_id, title, wikitext, cleaner, config)
        lines.extend(page_lines)
        counts.update(page_counts)
    return lines, counts


def _process_chunk_with(
    chunk: Chunk | Streams, parser: PageParser, cleaner: WikitextCleaner, config: AnchorBuildConfig
):
    """Parse one chunk of the dump and clean its articles; its redirects go back to the main process.
    ``Streams`` are decompressed and parsed a part at a time, each part cleaned before the next."""
    lines: list[str] = []
    counts: collections.Counter = collections.Counter()
    redirects: list[tuple[str, str]] = []
    for pages, skipped in parser.iter_parse(chunk):
        batch: list[tuple[int, str, str]] = []
        for page in pages:
            if page.redirect is None:
                batch.append((page.page_id, page.title, page.text))
                continue
            source = normalize_title(page.title)
            target = normalize_title(page.redirect.split("#", 1)[0])
            if source and target and source != target:
                redirects.append((source, target))
        part_lines, part_counts = _process_batch_with(batch, cleaner, config)
        lines += part_lines
        counts.update(part_counts)
        counts.update(pages=len(batch), redirects=len(pages) - len(batch), skipped_pages=skipped)
    return lines, counts, redirects


_WORKER_STATE: tuple[PageParser, WikitextCleaner, AnchorBuildConfig] | None = None


def _start_pool(num_workers: int, parser: PageParser, config: AnchorBuildConfig, store: Path):
    return start_pool(num_workers, _init_worker, (parser, asdict(config), str(store)))


def _init_worker(parser: PageParser, config_dict: dict[str, Any], store: str) -> None:
    """A worker of both passes: pass 1's parser, cleaner and config, and pass 2's redirect store."""
    global _WORKER_STATE
    _WORKER_STATE = (parser, WikitextCleaner(parser.namespaces), AnchorBuildConfig(**config_dict))
    redirect_pass.init_worker(store)
    _unmap_large_blocks_on_free()


def _process_chunk(chunk: Chunk | Streams):
    assert _WORKER_STATE is not None, "worker not initialised"
    return _process_chunk_with(chunk, *_WORKER_STATE)


# -- resident memory -------------------------------------------------------------------------------
# A task of a multistream dump is MBs: whole bz2 streams, their XML, the pickled lines. glibc serves
# such blocks with mmap (given back on free) only until the first ones are freed; it then raises its
# threshold and takes them from the heap, whose freed pages stay resident, so the build's memory crept
# up with the number of tasks. Elsewhere than glibc these do nothing.
def _glibc_malloc_function(name: str):
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc (musl has neither function)
        return None


_M_MMAP_THRESHOLD = -3  # mallopt parameter, malloc.h
_MALLOC_TRIM = _glibc_malloc_function("malloc_trim")


def _unmap_large_blocks_on_free() -> None:
    """In a worker: blocks over 128 KiB always mmap-ed. Not in the main process, which may be a
    training process: its allocation policy is left alone."""
    mallopt = _glibc_malloc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def _return_freed_memory() -> None:
    """In the main process, after each written result: hand the heap's free pages back to the OS."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# -- the build -------------------------------------------------------------------------------------
def _build_into(folder: Path, dump_path: Path, config: AnchorBuildConfig, num_workers: int, progress: bool):
    # one pool for both passes, forked at pass 1's first chunk while the main process is small
    with RedirectStore(folder / _REDIRECT_STORE) as redirects, SharedPool() as workers:
        counts, shards = _write_shards(folder, dump_path, config, num_workers, progress, redirects, workers)
        counts["anchor_targets_resolved_via_redirect"] = _resolve_redirects(
            folder, shards, redirects, num_workers, workers
        )
    return counts, shards


def _write_shards(
    folder: Path,
    dump_path: Path,
    config: AnchorBuildConfig,
    num_workers: int,
    progress: bool,
    redirects: RedirectStore,
    workers: SharedPool,
):
    """Pass 1: the shards, with link targets as written; the dump's redirects go to ``redirects``."""
    reader = DumpReader(dump_path, chunk_bytes=_CHUNK_BYTES)
    writer = ShardWriter(folder, config.shard_size)
    counts: collections.Counter = collections.Counter()
    state = None
    bar = None
    if progress:
        bar = dump_progress_bar(dump_path, "build-anchors")
    last_position = 0

    def take(result) -> None:
        lines, chunk_counts, chunk_redirects = result
        writer.write(lines)
        counts.update(chunk_counts)
        redirects.add(chunk_redirects)

    pool = OrderedPool(
        num_workers,
        start=lambda: _start_pool(num_workers, state[0], config, redirects.path),
        remote=_process_chunk,
        local=lambda chunk: _process_chunk_with(chunk, *state),
        take=take,
        shared=workers,
    )

    def submit(chunk: Chunk | Streams) -> None:
        nonlocal state, last_position
        if state is None:  # the header has been read: namespaces and root URI are known
            parser = reader.page_parser()
            state = (parser, WikitextCleaner(parser.namespaces), config)
        pool.submit(chunk)
        _return_freed_memory()  # the results just written
        if bar is not None:
            position = reader.position()
            bar.update(position - last_position)
            last_position = position
            bar.set_postfix(pages=counts["pages"], sentences=counts["sentences"], refresh=False)

    try:
        with pool:
            for chunk in pool.read(reader.chunks(), drain_on=InputFileError):
                submit(chunk)
            pool.finish()
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return counts, writer.shards


def _check_not_empty(dump_path: Path, counts: collections.Counter, config: AnchorBuildConfig) -> None:
    """A build that keeps no page, sentence or span is the wrong input or settings, never a corpus."""
    if not counts["pages"]:
        raise InputFileError(
            dump_path,
            f"no article page (namespace 0) in the dump ({counts['redirects']} redirects, "
            f"{counts['skipped_pages']} pages of other namespaces): no corpus written",
        )
    if not counts["sentences"]:
        raise InputFileError(
            dump_path,
            f"no sentence kept from {counts['pages']} article pages (a sentence needs "
            f"min_anchors_per_sentence={config.min_anchors_per_sentence} spans and "
            f"{config.min_sentence_chars}-{config.max_sentence_chars} characters): no corpus written",
        )
    if not counts["anchors"] + counts["repeats"] + counts["titles"]:
        raise InputFileError(
            dump_path, f"no anchor in the {counts['sentences']} sentences kept: no corpus written"
        )


def build_anchor_corpus(
    dump_path: str | Path,
    out_dir: str | Path,
    config: AnchorBuildConfig | None = None,
    num_workers: int = 1,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Build (or find up to date) the anchor corpus of ``dump_path`` in ``out_dir``; return its manifest."""
    config = config or AnchorBuildConfig()
    config.validate()
    if num_workers < 1:
        raise ConfigError("data.anchors.build_workers", f"must be >= 1, got {num_workers}")
    dump_path = Path(dump_path)
    out_dir = Path(out_dir)
    if not dump_path.is_file():
        raise InputFileError(dump_path, "file not found")
    started = time.perf_counter()
    digest = sha256_file(dump_path)
    build_hash = stable_hash({"input_sha256": digest, "config": asdict(config), "version": VERSION})
    if not force and (old := up_to_date(out_dir, build_hash, "anchor corpus")) is not None:
        return old
    log.info("building anchor corpus %s from %s with %d process(es)", out_dir, dump_path, num_workers)
    with atomic_directory(out_dir) as tmp:
        counts, shards = _build_into(tmp, dump_path, config, num_workers, progress)
        _check_not_empty(dump_path, counts, config)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "input": {"path": str(dump_path.resolve()), "sha256": digest, "bytes": dump_path.stat().st_size},
            "config": asdict(config),
            "build_hash": build_hash,
            "counts": {
                key: int(counts[key])
                for key in (
                    "pages",
                    "redirects",
                    "skipped_pages",
                    "sentences",
                    "anchors",
                    "repeats",
                    "titles",
                    "anchor_targets_resolved_via_redirect",
                )
            },
            "shards": shards,
            "seconds": round(time.perf_counter() - started, 3),
        }
        counts_line = ", ".join(f"{k}={v}" for k, v in manifest["counts"].items())
        atomic_write_json(tmp / "manifest.json", manifest)
    log.info("anchor corpus %s written in %.1fs: %s", out_dir, manifest["seconds"], counts_line)
    return manifest


# -- readers ---------------------------------------------------------------------------------------
def load_manifest(corpus_dir: str | Path) -> dict[str, Any]:
    return read_manifest(corpus_dir, FORMAT, VERSION, "anchor corpus", "cofee-build-anchors")


def _check_record(record: Any) -> str | None:
    """Return what is wrong with one corpus line, or None."""
    if not isinstance(record, dict):
        return "line is not a JSON object"
    text = record.get("text")
    spans = record.get("spans")
    if not isinstance(text, str) or not isinstance(spans, list):
        return "needs 'text' (string) and 'spans' (list)"
    previous_end = 0
    for span in spans:
        if not (isinstance(span, list) and len(span) == 4):
            return f"span {span!r} is not [start, end, target, kind]"
        start, end, target, kind = span
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            return f"span {span!r} out of range for a text of {len(text)} characters"
        if start < previous_end:
            return f"span {span!r} overlaps the previous span or is out of order"
        if kind not in KINDS or not isinstance(target, str):
            return f"span {span!r} has kind not in {KINDS} or a non-string target"
        previous_end = end
    return None


def iter_corpus(corpus_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the corpus sentences in order, validating each line."""
    return iter_shard_records(corpus_dir, load_manifest(corpus_dir), _check_record)


def default_dump_path() -> Path:
    """The small English dump shipped inside the gensim wheel (found without importing gensim)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise CofeeError(
            "gensim is not installed, so there is no sample dump: pip install gensim, or pass a dump path"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "test" / "test_data" / GENSIM_SAMPLE
        if candidate.is_file():
            return candidate
    raise CofeeError(f"the installed gensim has no test_data/{GENSIM_SAMPLE}: pass a dump path")
