"""Label a corpus with typed entity spans from the gazetteer (the NEE stage's training data).

Output folder (written atomically; skipped when the gazetteer, the input and the match config are
unchanged)::

    shard-00000.jsonl   one sentence a line:
                        {"page_id": int|null, "title": str|null, "text": str,
                         "spans": [[start, end, type_or_null, source, fine_type_or_null], ...]}
    ...
    manifest.json       format, version, input, gazetteer build, match config, build_hash, counts, shards

Spans are character offsets (end exclusive), sorted and non-overlapping. ``source`` is one of

* ``anchor``: a span of the anchor corpus (every kind: anchor, repeat, title). Its type is that of
  its link target when the target is a typed Wikipedia title (redirects included); else, with
  ``match.type_anchors_by_surface``, that of its exact surface in the gazetteer (ambiguity rule
  applied), or failing that that of a matcher hit covering exactly the anchor (a case variant under
  ``match.case``, or the name pattern: "[[Bertrand Russell]]" is PER); else null: an entity of
  unknown type, kept so that it is not taught as "not an entity".
* ``gazetteer``: an entry found by the matcher in the text, not overlapping an anchor (the text is
  matched whole, then hits that overlap an anchor are dropped, so an entry is never cut at an
  anchor; ``counts.*_matches_overlapping_anchors`` counts those that overlapped one only in part).
* ``name_pattern``: a person name found by the matcher's first-name ... last-name pattern (PER).

The default input is the anchor corpus (``iter_corpus``); ``raw_text`` labels a user's UTF-8 file
instead, one sentence or document a line (blank lines skipped; ``page_id`` and ``title`` null).

With ``workers > 1`` (``data.gazetteer.workers``) the matching runs in a process pool: the main
process reads the input and hands out batches of ``_BATCH`` sentences (``apply_async``, at most
``2 x workers`` in flight, so memory stays flat), takes the labelled lines back in submission order
and writes them, so the shards are the same, byte for byte, for every worker count. Workers are
forked on Linux and inherit the matcher (its automaton is never pickled); elsewhere they are spawned
and load the gazetteer themselves (the start method is the anchor build's, ``start_method`` in cofee.data.ordered_pool).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cofee.config import MatchConfig
from cofee.data.built_data import ShardWriter, iter_shard_records, read_manifest, up_to_date
from cofee.data.gazetteer.build import load_gazetteer, load_gazetteer_manifest
from cofee.data.gazetteer.matcher import GazetteerMatcher
from cofee.data.ordered_pool import OrderedPool, start_method, start_pool
from cofee.utils.errors import CofeeError, ConfigError, InputFileError
from cofee.utils.io import atomic_directory, atomic_write_json, sha256_file, stable_hash

__all__ = ["label_corpus", "iter_labelled", "load_labelled_manifest", "label_record", "SPAN_SOURCES"]

log = logging.getLogger(__name__)

FORMAT = "cofee-labelled-corpus"
VERSION = 1
SPAN_SOURCES = ("anchor", "gazetteer", "name_pattern")
UNKNOWN = "unknown"  # the key of type null in counts
_BATCH = 256  # sentences per task of a worker: per-task costs stay small, workers stay balanced


def _free_of(matches, anchors: list[list]) -> Iterator:
    """``(match, overlap)`` per match; overlap: None (free), "same" (an anchor's very span) or
    "partial" (both lists sorted by start)."""
    i, n = 0, len(anchors)
    for m in matches:
        while i < n and anchors[i][1] <= m.start:
            i += 1
        if i < n and anchors[i][0] < m.end:
            same = any(a[0] == m.start and a[1] == m.end for a in anchors[i:] if a[0] < m.end)
            yield m, "same" if same else "partial"
        else:
            yield m, None


def label_record(
    matcher: GazetteerMatcher,
    text: str,
    anchor_spans: list[list] | None,
    counts: collections.Counter,
) -> list[list]:
    """The labelled spans of one sentence (anchors typed, free gazetteer matches added)."""
    titles = matcher.gazetteer.titles
    by_surface = matcher.config.type_anchors_by_surface
    matches = matcher.match_spans(text)
    spans: list[list] = []
    exact = None
    for start, end, target, _kind in anchor_spans or ():
        typed = titles.get(target)
        if typed is not None:
            kind, fine = typed
            counts["anchors_typed_by_target"] += 1
        elif by_surface:
            found, kind, fine = matcher.resolve_surface(text[start:end])
            if found and kind is not None:
                counts["anchors_typed_by_surface"] += 1
            elif matches:
                if exact is None:
                    exact = {(m.start, m.end): m for m in matches}
                hit = exact.get((start, end))
                if hit is not None and hit.type is not None:
                    kind, fine = hit.type, hit.fine_type
                    counts[f"anchors_typed_by_{hit.source}"] += 1
        else:
            kind, fine = None, None
        if kind is None:
            counts["anchors_unknown_type"] += 1
        spans.append([start, end, kind, "anchor", fine])
    if matches:
        if spans:
            for m, overlap in _free_of(matches, spans):
                if overlap is None:
                    spans.append([m.start, m.end, m.type, m.source, m.fine_type])
                elif overlap == "partial":
                    counts[f"{m.source}_matches_overlapping_anchors"] += 1
            spans.sort(key=lambda s: s[0])
        else:
            spans = [[m.start, m.end, m.type, m.source, m.fine_type] for m in matches]
    for span in spans:
        counts[f"{span[3]}:{span[2] or UNKNOWN}"] += 1
    return spans


def _label_batch_with(matcher: GazetteerMatcher, records: list[dict[str, Any]]):
    """The output lines and counts of a batch of input records."""
    counts: collections.Counter = collections.Counter()
    lines = []
    for record in records:
        text = record["text"]
        spans = label_record(matcher, text, record["spans"], counts)
        counts["sentences"] += 1
        counts["sentences_with_typed_spans"] += any(s[2] is not None for s in spans)
        out = {"page_id": record.get("page_id"), "title": record.get("title"), "text": text, "spans": spans}
        lines.append(json.dumps(out, ensure_ascii=False))
    return lines, counts


_WORKER_MATCHER: GazetteerMatcher | None = None  # set before forking: forked workers inherit it


def _init_worker(gazetteer_dir: str, match: dict[str, Any]) -> None:
    global _WORKER_MATCHER
    if _WORKER_MATCHER is None:  # spawned: load the gazetteer in this process
        _WORKER_MATCHER = GazetteerMatcher(load_gazetteer(gazetteer_dir), MatchConfig(**match))


def _label_batch(records: list[dict[str, Any]]):
    assert _WORKER_MATCHER is not None, "worker not initialised"
    return _label_batch_with(_WORKER_MATCHER, records)


def _start_pool(workers: int, matcher: GazetteerMatcher, gazetteer_dir: Path, match: MatchConfig):
    """A pool whose workers hold ``matcher``: inherited when forked, rebuilt when spawned."""
    global _WORKER_MATCHER
    if start_method() == "fork":
        _WORKER_MATCHER = matcher  # inherited by the forked workers, frozen with the caller's objects
    try:
        return start_pool(workers, _init_worker, (str(gazetteer_dir), asdict(match)))
    finally:
        _WORKER_MATCHER = None


def _iter_raw(path: Path, counts: collections.Counter) -> Iterator[dict[str, Any]]:
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(
                    path,
                    f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                    line=number,
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            line = line.rstrip("\r\n")
            if not line.strip():
                counts["blank_lines_skipped"] += 1
                continue
            yield {"page_id": None, "title": None, "text": line, "spans": None}


def _inputs_of(anchors_dir: Path | None, raw_text: Path | None) -> dict[str, dict[str, Any]]:
    """What is labelled, by kind: the anchor corpus, a raw text file, or both (anchors first)."""
    inputs: dict[str, dict[str, Any]] = {}
    if anchors_dir is not None:
        from cofee.data.wiki.build_anchors import load_manifest

        manifest = load_manifest(anchors_dir)
        inputs["anchors"] = {
            "path": str(Path(anchors_dir).resolve()),
            "build_hash": manifest.get("build_hash"),
            "sentences": manifest.get("counts", {}).get("sentences"),
        }
    if raw_text is not None:
        if not raw_text.is_file():
            raise InputFileError(raw_text, "file not found")
        inputs["raw_text"] = {"path": str(raw_text.resolve()), "sha256": sha256_file(raw_text)}
    return inputs


def label_corpus(
    gazetteer_dir: str | Path,
    out_dir: str | Path,
    match: MatchConfig | None = None,
    anchors_dir: str | Path | None = None,
    raw_text: str | Path | None = None,
    shard_size: int = 5000,
    progress: bool = True,
    force: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Label the anchor corpus in ``anchors_dir`` and/or the lines of ``raw_text`` (both: the anchor
    sentences first) with the gazetteer in ``gazetteer_dir``; write shards and return the manifest.
    ``workers``: processes that match (the output is the same for any number)."""
    match = match or MatchConfig()
    match.validate()
    if shard_size < 1:
        raise CofeeError(f"shard_size must be >= 1, got {shard_size}")
    if workers < 1:
        raise ConfigError("data.gazetteer.workers", f"must be >= 1, got {workers}")
    if anchors_dir is None and raw_text is None:
        raise CofeeError("label_corpus needs an anchor corpus (anchors_dir) or a text file (raw_text)")
    out_dir = Path(out_dir)
    raw = Path(raw_text) if raw_text is not None else None
    anchors = Path(anchors_dir) if anchors_dir is not None else None
    started = time.perf_counter()
    gazetteer_manifest = load_gazetteer_manifest(gazetteer_dir)
    source = _inputs_of(anchors, raw)
    build_hash = stable_hash(
        {
            "gazetteer": gazetteer_manifest.get("build_hash"),
            "input": {kind: {k: v for k, v in spec.items() if k != "path"} for kind, spec in source.items()},
            "match": asdict(match),
            "shard_size": shard_size,
            "version": VERSION,
        }
    )
    if not force and (old := up_to_date(out_dir, build_hash, "labelled corpus")) is not None:
        return old
    gazetteer = load_gazetteer(gazetteer_dir)
    matcher = GazetteerMatcher(gazetteer, match)
    counts: collections.Counter = collections.Counter()
    records: Iterator[dict[str, Any]] = iter(())
    if anchors is not None:
        from cofee.data.wiki.build_anchors import iter_corpus

        records = iter_corpus(anchors)
    if raw is not None:
        records = itertools.chain(records, _iter_raw(raw, counts))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=source.get("anchors", {}).get("sentences"),
            unit="sent",
            desc="label",
            file=sys.stderr,
            dynamic_ncols=True,
        )
    with atomic_directory(out_dir) as tmp:
        writer = ShardWriter(tmp, shard_size)

        def take(result) -> None:
            lines, batch_counts = result
            writer.write(lines)
            counts.update(batch_counts)
            if bar is not None:
                bar.update(len(lines))

        try:
            with OrderedPool(
                workers,
                start=lambda: _start_pool(workers, matcher, Path(gazetteer_dir), match),
                remote=_label_batch,
                local=lambda batch: _label_batch_with(matcher, batch),
                take=take,
            ) as pool:
                while batch := list(itertools.islice(records, _BATCH)):
                    pool.submit(batch)
                pool.finish()
        finally:
            writer.close()
            if bar is not None:
                bar.close()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "input": source,
            "gazetteer": {
                "path": str(Path(gazetteer_dir).resolve()),
                "build_hash": gazetteer_manifest.get("build_hash"),
            },
            "match": asdict(match),
            "shard_size": shard_size,
            "build_hash": build_hash,
            "counts": _summarise(counts),
            "shards": writer.shards,
            "seconds": round(time.perf_counter() - started, 3),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    c = manifest["counts"]
    log.info(
        "labelled corpus %s written in %.1fs: %d sentences, spans by source %s, by type %s",
        out_dir,
        manifest["seconds"],
        c["sentences"],
        json.dumps(c["spans_by_source"]),
        json.dumps(c["spans_by_type"]),
    )
    return manifest


def _summarise(counts: collections.Counter) -> dict[str, Any]:
    by_source: dict[str, dict[str, int]] = {s: {} for s in SPAN_SOURCES}
    for key, value in counts.items():
        if ":" in key:
            src, kind = key.split(":", 1)
            by_source[src][kind] = int(value)
    by_type: collections.Counter = collections.Counter()
    for table in by_source.values():
        by_type.update(table)
    return {
        "sentences": int(counts["sentences"]),
        "sentences_with_typed_spans": int(counts["sentences_with_typed_spans"]),
        "spans": int(sum(by_type.values())),
        "spans_by_type": dict(sorted(by_type.items())),
        "spans_by_source": {src: int(sum(t.values())) for src, t in by_source.items()},
        "spans_by_source_and_type": {src: dict(sorted(t.items())) for src, t in by_source.items()},
        "anchors_typed_by_target": int(counts["anchors_typed_by_target"]),
        "anchors_typed_by_surface": int(counts["anchors_typed_by_surface"]),
        "anchors_typed_by_gazetteer_match": int(counts["anchors_typed_by_gazetteer"]),
        "anchors_typed_by_name_pattern": int(counts["anchors_typed_by_name_pattern"]),
        "anchors_unknown_type": int(counts["anchors_unknown_type"]),
        "gazetteer_matches_overlapping_anchors": int(counts["gazetteer_matches_overlapping_anchors"]),
        "name_pattern_matches_overlapping_anchors": int(counts["name_pattern_matches_overlapping_anchors"]),
        "blank_lines_skipped": int(counts["blank_lines_skipped"]),
    }


# -- readers ---------------------------------------------------------------------------------------
def load_labelled_manifest(labelled_dir: str | Path) -> dict[str, Any]:
    return read_manifest(labelled_dir, FORMAT, VERSION, "labelled corpus", "cofee-build-gazetteer")


def _check_record(record: Any) -> str | None:
    """What is wrong with one labelled line, or None."""
    if not isinstance(record, dict):
        return "line is not a JSON object"
    text, spans = record.get("text"), record.get("spans")
    if not isinstance(text, str) or not isinstance(spans, list):
        return "needs 'text' (string) and 'spans' (list)"
    page_id, title = record.get("page_id"), record.get("title")
    if not (page_id is None or (isinstance(page_id, int) and not isinstance(page_id, bool))):
        return f"'page_id' must be an integer or null, got {page_id!r}"
    if not (title is None or isinstance(title, str)):
        return f"'title' must be a string or null, got {title!r}"
    previous_end = 0
    for span in spans:
        if not (isinstance(span, list) and len(span) == 5):
            return f"span {span!r} is not [start, end, type, source, fine_type]"
        start, end, kind, source, fine = span
        if not (
            isinstance(start, int)
            and isinstance(end, int)
            and not isinstance(start, bool)
            and 0 <= start < end <= len(text)
        ):
            return f"span {span!r} out of range for a text of {len(text)} characters"
        if start < previous_end:
            return f"span {span!r} overlaps the previous span or is out of order"
        if source not in SPAN_SOURCES:
            return f"span {span!r} has source not in {SPAN_SOURCES}"
        if not (kind is None or isinstance(kind, str)) or not (fine is None or isinstance(fine, str)):
            return f"span {span!r}: type and fine type must be strings or null"
        previous_end = end
    return None


def iter_labelled(labelled_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the labelled sentences in order, validating each line."""
    return iter_shard_records(labelled_dir, load_labelled_manifest(labelled_dir), _check_record)
