"""Tokenized corpora as a cached, memory-mapped Arrow dataset (Hugging Face `datasets`).

A corpus (the anchor corpus or the labelled corpus) is tokenized and cut into windows once, in
parallel (`num_proc` processes), into `<cache_dir>/<key>/{train,val}/` (Arrow files written by
`datasets.save_to_disk`) plus a `manifest.json`. The key hashes what the windows depend on: the
corpus manifest, the tokenizer (class, name, a hash of its vocabulary and special tokens) and the
windowing settings (max_length, scheme, labels, span mapping, dev split). The folder is filled in a
temporary sibling and renamed into place, under a file lock: the first process builds it, any other
(another DDP rank, another run on the same data) waits at the lock and then reads it. Every stage,
rank and resume reuses it.

Reading: `CachedWindows` is a sequence of `EncodedWindow` over the memory-mapped rows (a window is
made when it is asked for; a batch is read with one Arrow `take`). It holds the window lengths as one
int32 array (for the length-bucketing sampler) and the selected rows (int64), nothing per window in
Python. Assigning a field of a window it handed out (`windows[i].labels = ...`, as self-training
does) is kept in an overlay, so it holds for later reads, in worker processes too. Parent-head spans
(`ParentSpans`, built once per parent export by `gazetteer_labelled`) are another overlay, by row.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from cofee.data.alignment import AlignmentStats, EncodedWindow, encode_sentences, special_tokens
from cofee.data.built_data import iter_jsonl
from cofee.utils.errors import InputFileError
from cofee.utils.io import atomic_write_json, read_json, stable_hash

log = logging.getLogger(__name__)

FORMAT, VERSION = "cofee-token-cache", 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
# per-sentence alignment counts, stored on the first window of each sentence
STAT_COLUMNS = {"spans": "s_spans", "dropped_spans": "s_dropped", "split_spans": "s_split",
                "truncated_words": "s_truncated"}  # fmt: skip
SMALL = 20_000  # sentences below which the build runs in this process (forking costs more than it saves)


def tokenizer_fingerprint(tokenizer) -> dict:
    """What decides how a tokenizer splits text, not where it was loaded from: NEE and FET load theirs
    from their parent's export, a copy of the same tokenizer, and must find the cache a run with the
    base model (or another run folder) built. A fast tokenizer's pipeline (normalizer, pre-tokenizer,
    model) is hashed whole, less the padding and truncation its calls set anyway."""
    vocab = tokenizer.get_vocab()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pipeline = None
    if backend is not None:
        spec = json.loads(backend.to_str())
        pipeline = stable_hash({k: v for k, v in spec.items() if k not in ("padding", "truncation")})
    return {
        "class": type(tokenizer).__name__,
        "pipeline": pipeline,
        "vocab": stable_hash(sorted(vocab.items())),
        "size": len(vocab),
        "specials": special_tokens(tokenizer),
        # a slow tokenizer has no pipeline to hash: its casing and accent settings stand in for it
        "options": None
        if backend is not None
        else {
            k: getattr(tokenizer, k, None)
            for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
        },
    }


# -- reading the corpus (in the build's worker processes) ----------------------------------------
def _entity_spans(record: dict, mapping: dict) -> list[list]:
    if mapping["kind"] == "anchors":
        kinds = set(mapping["span_kinds"])
        return [[s, e, mapping["entity_type"]] for s, e, _t, kind in record["spans"] if kind in kinds]
    types = set(mapping["types"])
    return [[s, e, t if t in types else mapping["unknown"]] for s, e, t, *_ in record["spans"]]


def _read_sentences(shards: list[dict], mapping: dict, check: Callable, split: dict) -> Iterator[dict]:
    """The sentences of some corpus shards, in order; `shards`: {path, offset (global line index)}."""
    from cofee.data_modules.wiki_anchor import is_dev_page

    for shard in shards:
        path = Path(shard["path"])
        for number, record in iter_jsonl(path):
            problem = check(record)
            if problem:
                raise InputFileError(path, problem, line=number)
            line = shard["offset"] + number - 1
            page = record.get("page_id")
            page = line if page is None else page  # raw text: one "page" per line
            yield {
                "val": is_dev_page(page, split["dev_fraction"], split["split_seed"]),
                "text": record["text"],
                "spans": json.dumps(_entity_spans(record, mapping)),
                "raw": json.dumps(record["spans"]) if mapping["keep_raw"] else "",
            }


def _encode_batch(batch: dict, indices: list[int], tokenizer, settings: dict) -> dict:
    """Windows of a batch of sentences; each sentence on its own so its counts are its own."""
    out: dict[str, list] = {name: [] for name in WINDOW_COLUMNS}
    for text, spans_json, index in zip(batch["text"], batch["spans"], indices):
        stats = AlignmentStats()
        spans = [tuple(s) for s in json.loads(spans_json)]
        windows = encode_sentences(
            tokenizer,
            [text],
            [spans],
            settings["scheme"],
            settings["label2id"],
            settings["max_length"],
            stats,
        )
        for k, w in enumerate(windows):
            out["input_ids"].append(w.input_ids)
            out["labels"].append(w.labels)
            out["word_positions"].append(w.word_positions)
            out["word_chars"].append([c for pair in w.word_char_spans for c in pair])
            out["span_starts"].append([int(s[0]) for s in w.spans])
            out["span_ends"].append([int(s[1]) for s in w.spans])
            out["span_types"].append([str(s[2]) for s in w.spans])
            out["sentence_index"].append(index)
            out["word_offset"].append(w.word_offset)
            out["length"].append(len(w))
            out["first"].append(k == 0)
            for field, column in STAT_COLUMNS.items():
                out[column].append(getattr(stats, field) if k == 0 else 0)
    return out


def _features():
    from datasets import Features, Sequence, Value

    ints = Sequence(Value("int32"))
    return Features(
        {
            "input_ids": ints,
            "labels": ints,
            "word_positions": ints,
            "word_chars": ints,
            "span_starts": ints,
            "span_ends": ints,
            "span_types": Sequence(Value("string")),
            "sentence_index": Value("int64"),
            "word_offset": Value("int32"),
            "length": Value("int32"),
            "first": Value("bool"),
            **{column: Value("int32") for column in STAT_COLUMNS.values()},
        }
    )


WINDOW_COLUMNS = (
    "input_ids", "labels", "word_positions", "word_chars", "span_starts", "span_ends", "span_types",
    "sentence_index", "word_offset", "length", "first", *STAT_COLUMNS.values(),
)  # fmt: skip


# -- building -------------------------------------------------------------------------------------
def windowing_settings(module) -> dict:
    """The settings of a data module that decide its cached windows, whatever the corpus: tagging
    scheme, label ids, window length and the dev split (each module adds how its spans are typed)."""
    return {
        "scheme": str(module.scheme),
        "label2id": dict(module.label2id),
        "max_length": module.max_length,
        "dev_fraction": module.dev_fraction,
        "split_seed": module.split_seed,
    }


def cache_key(source_manifest: dict, tokenizer, settings: dict) -> tuple[str, dict]:
    inputs = {
        "format": FORMAT,
        "version": VERSION,
        "corpus": stable_hash(source_manifest),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "settings": settings,
    }
    return stable_hash(inputs), inputs


def build_lock(folder: str | Path) -> FileLock:
    """The file lock a cached artifact `folder` is built under (`.<name>.lock` beside it): the first
    process to take it builds, the others wait there and then read. The token cache and the artifacts
    derived from it (`cofee.data_modules.cluster_spans`) use it."""
    folder = Path(folder)
    return FileLock(str(folder.parent / f".{folder.name}.lock"))


def ensure_token_cache(
    cache_root: str | Path,
    source_dir: str | Path,
    source_manifest: dict,
    check: Callable[[Any], str | None],
    tokenizer,
    settings: dict,
    num_proc: int = 1,
    progress: bool = False,
) -> Path:
    """The cache folder of this corpus, tokenizer and settings; built first if missing (with progress
    bars when `progress`: `cofee-build-cache`; inside training they would interleave across ranks).

    `settings`: scheme, label2id, max_length, dev_fraction, split_seed and `mapping` (how corpus spans
    become entity spans: {kind: anchors, span_kinds, entity_type} or {kind: labelled, types,
    unknown}; `keep_raw`: keep each sentence's corpus spans). `check` validates one corpus line.
    """
    key, inputs = cache_key(source_manifest, tokenizer, settings)
    root = Path(cache_root)
    folder = root / key
    if (folder / MANIFEST).is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with build_lock(folder):
        if (folder / MANIFEST).is_file():  # another process built it while this one waited
            return folder
        tmp = root / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            manifest = _build(
                tmp, Path(source_dir), source_manifest, check, tokenizer, settings, num_proc, progress
            )
            atomic_write_json(tmp / MANIFEST, {**manifest, "key": key, "inputs": inputs})
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _build(
    tmp: Path, source_dir: Path, source_manifest: dict, check, tokenizer, settings, num_proc, progress=False
) -> dict:
    import datasets
    from datasets import Dataset

    started = time.time()
    tmp.mkdir(parents=True)
    hf_cache = tmp / "hf"
    shards, offset = [], 0
    for shard in source_manifest["shards"]:
        shards.append({"path": str(source_dir / shard["file"]), "offset": offset})
        offset += int(shard.get("sentences", 0))
    total = offset
    procs = max(1, min(num_proc, len(shards))) if total >= SMALL else 1
    split = {"dev_fraction": settings["dev_fraction"], "split_seed": settings["split_seed"]}
    mapping = {**settings["mapping"], "keep_raw": settings.get("keep_raw", False)}
    was_enabled = datasets.is_progress_bar_enabled()
    if progress:
        datasets.enable_progress_bars()
    else:
        datasets.disable_progress_bars()
    try:
        sentences = Dataset.from_generator(
            _read_sentences,
            gen_kwargs={"shards": shards, "mapping": mapping, "check": check, "split": split},
            num_proc=procs if procs > 1 else None,
            cache_dir=str(hf_cache),
        )
        counts = {}
        procs = max(1, num_proc) if len(sentences) >= SMALL else 1
        for name in SPLITS:
            want = name == "val"
            part = sentences.filter(
                lambda flags, want=want: [f == want for f in flags],
                input_columns="val",
                batched=True,
                desc=f"{name} sentences",
                num_proc=procs if procs > 1 else None,
            ).flatten_indices()
            windows = part.map(
                _encode_batch,
                batched=True,
                batch_size=256,
                with_indices=True,
                remove_columns=part.column_names,
                fn_kwargs={"tokenizer": tokenizer, "settings": settings},
                features=_features(),
                desc=f"{name} windows",
                num_proc=procs if procs > 1 else None,
                new_fingerprint=stable_hash([name, settings, str(tmp)]),
            )
            windows.save_to_disk(str(tmp / name))
            if mapping["keep_raw"]:
                part.select_columns(["raw"]).save_to_disk(str(tmp / f"{name}-sentences"))
            counts[name] = {"sentences": len(part), "windows": len(windows)}
            del windows, part
        del sentences
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
        else:
            datasets.disable_progress_bars()
    shutil.rmtree(hf_cache, ignore_errors=True)
    seconds = round(time.time() - started, 2)
    log.info("token cache %s: %s in %.1f s (%d processes)", tmp.name, counts, seconds, procs)
    return {"format": FORMAT, "version": VERSION, "counts": counts, "seconds": seconds, "num_proc": procs}


def load_cache_manifest(folder: str | Path) -> dict:
    return read_json(Path(folder) / MANIFEST)


# -- reading --------------------------------------------------------------------------------------
def _open_table(path: Path):
    """A split `datasets.save_to_disk` wrote, memory-mapped with pyarrow alone (its files are Arrow
    IPC streams, listed in `state.json`): reading needs neither `datasets` nor pandas imported."""
    import pyarrow as pa

    files = [f["filename"] for f in read_json(path / "state.json")["_data_files"]]
    tables = [pa.ipc.open_stream(pa.memory_map(str(path / name), "r")).read_all() for name in files]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def sample_sentences(total: int, max_sentences: int | None, seed: int) -> np.ndarray | None:
    """The seeded sample of sentence indices (sorted) the data modules train on; None: all."""
    if max_sentences is None or total <= max_sentences:
        return None
    return np.sort(np.random.default_rng(seed).permutation(total)[:max_sentences])


def write_arrow(path: Path, table) -> None:
    """One Arrow IPC file (what `read_arrow` memory-maps)."""
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_arrow(path: Path):
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()  # memory-mapped, not read


class ParentSpans:
    """Labels and spans a parent head gave some rows (an overlay of `CachedWindows`, by table row):
    `<folder>/rows.arrow`, sorted by row."""

    FILE = "rows.arrow"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._table = None
        self.rows = np.asarray(self.table.column("row").to_numpy(), dtype=np.int64)

    @property
    def table(self):
        if self._table is None:
            self._table = read_arrow(self.folder / self.FILE)
        return self._table

    def __getstate__(self):
        return {**self.__dict__, "_table": None}

    def lookup(self, row: int) -> dict | None:
        at = int(np.searchsorted(self.rows, row))
        if at >= len(self.rows) or self.rows[at] != row:
            return None
        return self.table.slice(at, 1).to_pylist()[0]


class CachedWindows(Sequence):
    """The windows of one split of a token cache (optionally a subset of its rows), memory-mapped."""

    def __init__(self, folder: str | Path, rows: np.ndarray | None = None):
        self.folder = Path(folder)
        self._table = None
        self._batches = self._offsets = None  # the table's record batches and their first rows
        table = self.table
        self.rows = rows  # table row of each window of this view; None: every row
        lengths = table.column("length").to_numpy()
        self.lengths = np.ascontiguousarray(lengths if rows is None else lengths[rows], dtype=np.int32)
        self.overlay: dict[int, dict[str, Any]] = {}  # view index -> fields assigned since
        self.parent: ParentSpans | None = None
        self.span_offsets: np.ndarray | None = None  # global id of each window's first span (stage 3)

    @property
    def table(self):
        if self._table is None:
            self._table = _open_table(self.folder)
        return self._table

    def __getstate__(self):  # worker processes reopen the memory map; nothing per row is pickled
        return {**self.__dict__, "_table": None, "_batches": None, "_offsets": None}

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, index: int) -> int:
        return int(index if self.rows is None else self.rows[index])

    def column(self, name: str) -> np.ndarray:
        """A scalar column of this view as an array (read from the map, not kept)."""
        values = self.table.column(name).to_numpy()
        return values if self.rows is None else values[self.rows]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.__getitems__(list(range(len(self)))[index])
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[EncodedWindow]:
        rows = [self.row(i) for i in indices]
        records = self._records(np.asarray(rows, dtype=np.int64))
        return [self._window(int(i), row, rec) for i, row, rec in zip(indices, rows, records)]

    def _records(self, rows: np.ndarray) -> list[dict]:
        """The rows as dicts, read from their record batches only (`Table.take` on a memory-mapped
        table of many batches concatenates every batch first: O(corpus) per call)."""
        if self._batches is None:
            self._batches = self.table.to_batches()
            self._offsets = np.cumsum([0] + [b.num_rows for b in self._batches])
        chunk = np.searchsorted(self._offsets, rows, side="right") - 1
        records: list = [None] * len(rows)
        for c in np.unique(chunk).tolist():
            where = np.flatnonzero(chunk == c)
            local = rows[where] - self._offsets[c]
            for at, record in zip(where.tolist(), self._batches[c].take(local).to_pylist()):
                records[at] = record
        return records

    def __iter__(self) -> Iterator[EncodedWindow]:
        for start in range(0, len(self), 1024):
            yield from self.__getitems__(range(start, min(start + 1024, len(self))))

    def _window(self, index: int, row: int, rec: dict) -> EncodedWindow:
        labels = rec["labels"]
        spans = list(zip(rec["span_starts"], rec["span_ends"], rec["span_types"]))
        if self.parent is not None:
            marked = self.parent.lookup(row)
            if marked is not None:
                labels = marked["labels"]
                spans = list(zip(marked["span_starts"], marked["span_ends"], marked["span_types"]))
        chars = rec["word_chars"]
        window = _Window(
            input_ids=rec["input_ids"],
            labels=labels,
            word_positions=rec["word_positions"],
            word_char_spans=list(zip(chars[0::2], chars[1::2])),
            spans=spans,
            sentence_index=rec["sentence_index"],
            word_offset=rec["word_offset"],
        )
        if self.span_offsets is not None:
            first = int(self.span_offsets[index])
            window.span_ids = list(range(first, first + len(spans)))
        for name, value in self.overlay.get(index, {}).items():
            object.__setattr__(window, name, value)
        object.__setattr__(window, "_sink", (self.overlay, index))
        return window

    def stats(self) -> AlignmentStats:
        first = self.column("first")
        stats = AlignmentStats(sentences=int(first.sum()), windows=len(self))
        for field, column in STAT_COLUMNS.items():
            setattr(stats, field, int(self.column(column).sum()))
        return stats


class _Window(EncodedWindow):
    """A window read from the cache: assigning a field records it in the cache view's overlay."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        sink = self.__dict__.get("_sink")
        if sink is not None and name != "_sink":
            overlay, index = sink
            overlay.setdefault(index, {})[name] = value

    def __reduce__(self):  # pickles as a plain window (a collated batch never needs the overlay)
        fields = {k: v for k, v in self.__dict__.items() if k != "_sink"}
        return (_plain_window, (fields,))


def _plain_window(fields: dict) -> EncodedWindow:
    return EncodedWindow(**fields)


class SentenceSpans(Sequence):
    """Each sentence's corpus spans (JSON in the cache), by sentence index of its split."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._table = None
        self._len = self.table.num_rows

    @property
    def table(self):
        if self._table is None:
            self._table = _open_table(self.folder)
        return self._table

    def __getstate__(self):
        return {**self.__dict__, "_table": None}

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> list[list]:
        if index < 0:
            index += self._len
        return json.loads(self.table.column("raw")[index].as_py())
