"""ClusterDataModule: the NEE windows, each entity span with a global span id (stage 3, FET).

After `setup`, every entity span of every training window (typed, unknown-type, and those the parent
head marked) has an id: 0, 1, 2, ... in window order, then span order, so ids are stable for a given
corpus, config and seed, and survive shuffling and DDP sharding. Batches carry `span_ids` (one list
per window, aligned with `spans`); the FET module looks each span's current pseudo-label up by id, so
no dataloader has to be rebuilt when the clusters change (Lightning does not restore the
`reload_dataloaders_every_n_epochs` schedule on resume). Per span id the module keeps the coarse type
and, where the labelled corpus has one, the fine type and the span's source: the reference the
clusters are scored against (`cofee.experiments.fet_eval`), never a training signal.

Those per-span columns are a built artifact beside the token cache, `<cache>/span_columns/<key>/`
(the key: the token cache's key, the training rows and the parent-span artifact's key): the id of
each window's first span (int64 per window) and, per span, a small signed integer code (-1: none)
into a vocabulary kept in the manifest, for the coarse type, fine type and source. The first process
to ask computes it (one pass over the training windows) under a file lock and writes it atomically,
its manifest last; every other rank and every resume memory-maps the `.npy` files, so a setup holds
nothing per span in Python.
"""

from __future__ import annotations

import hashlib
import logging
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from cofee.data.alignment import EncodedWindow
from cofee.data_modules.batching import window_loader
from cofee.data_modules.gazetteer_labelled import GazetteerDataModule
from cofee.data_modules.token_cache import build_lock, load_cache_manifest
from cofee.utils.errors import InputFileError
from cofee.utils.io import atomic_directory, atomic_write_json, read_json, stable_hash

log = logging.getLogger(__name__)

FORMAT, VERSION = "cofee-span-columns", 1
MANIFEST = "manifest.json"
FOLDER = "span_columns"  # under the token cache folder
CODED = ("coarse", "fine", "source")  # the per-span columns, each codes into a vocabulary
FLUSH_SPANS = 1 << 16  # spans gathered in Python lists before they become an array chunk


def span_records(window: EncodedWindow, records: Sequence[Sequence]) -> list[list | None]:
    """For each span of `window`, the labelled-corpus span it was encoded from, or None (a span the
    parent head marked). A corpus span maps onto the words it overlaps (`cofee.data.alignment`); the first
    one, in corpus order, that maps onto exactly a window span's words is that span's record.

    The window's words are in character order, so a record's words are found by bisection and each
    record and span is looked at once (not every record for every span)."""
    chars = window.word_char_spans
    if not chars:
        return [None] * len(window.spans)
    starts, ends = [c[0] for c in chars], [c[1] for c in chars]
    first_char, last_char = starts[0], ends[-1]
    by_words: dict[tuple[int, int], Sequence] = {}
    for record in records:
        if record[0] >= last_char or record[1] <= first_char:
            continue  # outside this window (a long sentence has several)
        words = (bisect_right(ends, record[0]), bisect_left(starts, record[1]))
        if words[0] < words[1]:
            by_words.setdefault(words, record)  # the first in corpus order wins
    found = (by_words.get((int(span[0]), int(span[1]))) for span in window.spans)
    return [list(record) if record is not None else None for record in found]


# -- the artifact: arrays on disk, memory-mapped ---------------------------------------------------
class MappedArray:
    """An `.npy` file, memory-mapped when first read; pickles as its path (worker processes reopen
    the map, nothing per row is pickled)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, index):
        return self.array[index]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.array, dtype=dtype)


class CodedColumn(Sequence):
    """One categorical value per span id: `codes` (a small signed integer per span, -1: none) into
    `vocab`. Reads as the sequence of `str | None` it encodes (and equals that list)."""

    def __init__(self, codes: MappedArray | np.ndarray, vocab: Sequence[str]):
        self.codes = codes
        self.vocab = list(vocab)

    def __len__(self) -> int:
        return len(self.codes)

    def _value(self, code: int) -> str | None:
        return self.vocab[code] if code >= 0 else None

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._value(code) for code in np.asarray(self.codes[index]).tolist()]
        return self._value(int(self.codes[index]))

    def __iter__(self) -> Iterator[str | None]:
        for start in range(0, len(self), FLUSH_SPANS):
            yield from self[start : start + FLUSH_SPANS]

    def __eq__(self, other) -> bool:
        if isinstance(other, CodedColumn):
            return list(self) == list(other)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # a mutable-looking sequence: compared by value, not hashed


class SpanColumns:
    """An opened span-column artifact: `offsets` (id of each window's first span) and the coded
    columns `coarse`, `fine`, `source` (memory-mapped)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_json(self.folder / MANIFEST)
        self.offsets = MappedArray(self.folder / "offsets.npy")
        vocab = self.manifest["vocab"]
        self.coarse, self.fine, self.source = (
            CodedColumn(MappedArray(self.folder / f"{name}.npy"), vocab[name]) for name in CODED
        )

    @property
    def num_spans(self) -> int:
        return int(self.manifest["spans"])


def complete(folder: Path) -> bool:
    """A finished artifact: the manifest (written last) and every array it lists."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return False
    return all((Path(folder) / name).is_file() for name in read_json(path).get("files", []))


def code_dtype(size: int) -> np.dtype:
    """The smallest signed integer type that holds codes 0..size-1 and -1."""
    for dtype in (np.int8, np.int16, np.int32):
        if size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _code(vocab: dict[str, int], value: str | None) -> int:
    if value is None:
        return -1
    return vocab.setdefault(value, len(vocab))


def compute_span_columns(windows: Iterable[EncodedWindow], n_windows: int, records) -> dict:
    """One pass over the training windows: the span count of each window and the three codes of each
    span, gathered in array chunks (a few bytes a span), plus the vocabularies in first-seen order."""
    counts = np.zeros(n_windows, dtype=np.int64)
    vocab: dict[str, dict[str, int]] = {name: {} for name in CODED}
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in CODED}
    pending: dict[str, list[int]] = {name: [] for name in CODED}

    def flush():
        for name in CODED:
            chunks[name].append(np.asarray(pending[name], dtype=np.int32))
            pending[name].clear()

    for index, window in enumerate(windows):
        counts[index] = len(window.spans)
        for span, record in zip(window.spans, span_records(window, records[window.sentence_index])):
            pending["coarse"].append(_code(vocab["coarse"], str(span[2])))
            pending["fine"].append(_code(vocab["fine"], record[4] if record and len(record) > 4 else None))
            pending["source"].append(_code(vocab["source"], record[3] if record else None))
        if len(pending["coarse"]) >= FLUSH_SPANS:
            flush()
    flush()
    columns = {}
    for name in CODED:
        dtype = code_dtype(len(vocab[name]))
        columns[name] = np.concatenate(chunks[name]).astype(dtype, copy=False)
        chunks[name].clear()  # the int32 chunks go as soon as their narrow copy exists
    return {
        "offsets": np.cumsum(counts) - counts,
        **columns,
        "vocab": {name: list(vocab[name]) for name in CODED},
    }


def _write_span_columns(folder: Path, computed: dict, inputs: dict, seconds: float) -> None:
    """The arrays, then the manifest, in a temporary sibling renamed into place (`atomic_directory`)."""
    arrays = ("offsets", *CODED)
    with atomic_directory(folder) as tmp:
        for name in arrays:
            np.save(tmp / f"{name}.npy", computed[name])
        atomic_write_json(
            tmp / MANIFEST,
            {
                **inputs,
                "windows": int(computed["offsets"].shape[0]),
                "spans": int(computed["coarse"].shape[0]),
                "vocab": computed["vocab"],
                "dtypes": {name: str(computed[name].dtype) for name in arrays},
                "files": [f"{name}.npy" for name in arrays],
                "seconds": round(seconds, 2),
            },
        )


def span_columns_inputs(cache: Path, rows: np.ndarray | None, parent_key: str | None) -> dict:
    """What the columns depend on: the token cache, the training rows (the sample), the parent spans."""
    sample = "all" if rows is None else hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()[:16]
    return {
        "format": FORMAT,
        "version": VERSION,
        "cache": load_cache_manifest(cache)["key"],
        "rows": sample,
        "parent": parent_key,
    }


def ensure_span_columns(cache: Path, windows, records, parent_key: str | None = None) -> SpanColumns:
    """The span columns of these training windows (a `CachedWindows` view of `cache`), computed and
    written by the first process to ask (the others wait at the lock), then memory-mapped."""
    inputs = span_columns_inputs(cache, getattr(windows, "rows", None), parent_key)
    key = stable_hash(inputs)
    folder = Path(cache) / FOLDER / key
    if not complete(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        with build_lock(folder):
            if not complete(folder):  # another process finished it while this one waited
                started = time.perf_counter()
                computed = compute_span_columns(windows, len(windows), records)
                seconds = time.perf_counter() - started
                _write_span_columns(folder, computed, {**inputs, "key": key}, seconds)
                log.info("span columns: %d spans in %.1f s (%s)", len(computed["coarse"]), seconds, folder)
    columns = SpanColumns(folder)
    if int(columns.manifest["windows"]) != len(windows):
        raise InputFileError(
            folder / MANIFEST, f"{columns.manifest['windows']} windows, the training view has {len(windows)}"
        )
    return columns


class ClusterDataModule(GazetteerDataModule):
    """`GazetteerDataModule` whose training windows carry global span ids, plus a feature loader."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.span_columns: SpanColumns | None = None  # after `setup`

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.span_columns is None:  # idempotent, like the parent
            self.assign_span_ids()

    def assign_span_ids(self) -> None:
        """Open the span-column artifact of the training windows (built first when missing) and give
        the window view each window's first span id."""
        parent_key = self.parent_spans["key"] if self.parent_spans else None
        self.span_columns = ensure_span_columns(
            self.cache, self.train_windows, self.record_spans["train"], parent_key
        )
        self.train_windows.span_offsets = self.span_columns.offsets

    # what each span id is, as sequences of `str | None` (codes and vocabulary: `.codes`, `.vocab`)
    @property
    def span_types(self) -> CodedColumn | None:
        """Coarse type per span id ("?": unknown)."""
        return self.span_columns.coarse if self.span_columns else None

    @property
    def span_fine_types(self) -> CodedColumn | None:
        """Fine type per span id (None: none known)."""
        return self.span_columns.fine if self.span_columns else None

    @property
    def span_sources(self) -> CodedColumn | None:
        """anchor | gazetteer | name_pattern per span id (None: a span the parent head marked)."""
        return self.span_columns.source if self.span_columns else None

    @property
    def num_spans(self) -> int:
        return self.span_columns.num_spans if self.span_columns else 0

    def feature_dataloader(self) -> DataLoader:
        """All training windows, unshuffled and in a fixed order (sharded across DDP ranks)."""
        return window_loader(
            self.train_windows, self.eval_batch_size, False, self.tokenizer.pad_token_id, **self._loading
        )
