"""Span features for clustering: pooled hidden states of every span, keyed by a global span id.

`extract_span_features` runs the encoder over batches of the `WindowCollator` shape that also carry
`span_ids` (one list per window, aligned with `spans`), pools each span (`cofee.models.span_pooling`) from a
chosen layer, and returns float32 features with their int64 span ids, in the order the batches gave
them. With `out_path` the features are streamed to disk and come back memory-mapped, so a corpus of
millions of spans never sits in RAM twice.

`SpanFeatureStore` keeps the newest vector of every training span this rank owns (span id modulo
the number of ranks), by span id, with the epoch it was recorded in, in preallocated numpy arrays or
memory-mapped files: FET writes into it while it trains, the cluster refresh reads it back.

On disk (`save_span_features` / `load_span_features`): `<out_path>` is a `.npy` of float32 [N, D]
(open it with `np.load(..., mmap_mode="r")`), `<stem>.span_ids.npy` beside it holds the int64 [N] ids.
Both are written to a temporary file and renamed into place, ids first, so a reader never sees a
half-written features file; `load_span_features` checks that the two agree in length.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from cofee.clustering.kmeans import SampleRows
from cofee.models.span_pooling import pool_batch_spans, pooled_dim
from cofee.utils.errors import InputFileError


class SpanFeatures(NamedTuple):
    features: np.ndarray  # [N, D] float32 (an np.memmap when read from disk)
    span_ids: np.ndarray  # [N] int64, global ids: the key that survives sharding and shuffling

    def __len__(self) -> int:  # the number of spans, not of fields
        return int(self.span_ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


class SpanFeatureStore:
    """The newest pooled vector of every span this rank owns (span id modulo `world` is `rank`), by
    span id, and the epoch it is from; nothing of the spans other ranks own.

    Rows: owned span `i` is row `i // world`. `epochs[row]`: -2 never seen, -1 from the extraction
    pass at train start, e >= 0 recorded in epoch e. `features` and `epochs` are torch views of numpy
    arrays: in memory, or with `folder` memory-mapped files `rank<r>-of-<w>.{features,epochs}.npy`
    (float32 [owned, dim], int64 [owned]), so a rank's share of a large corpus lives on disk (made
    anew, unless `reopen`: then a rank's files of the same shape are used as they are).

    A vector this rank records of a span another rank owns (the sampler deals windows anew every
    epoch) waits in `pending` (structured rows: id, epoch, vector; with `folder` appended to
    `rank<r>-of-<w>.pending`, so a stopped run keeps them) until `take_pending` hands them to the
    exchange (`cofee.clustering.distributed.exchange_pending`), which `apply`s them on their owner.
    """

    NEVER, EXTRACTED = -2, -1

    def __init__(
        self,
        n_spans: int,
        dim: int,
        rank: int = 0,
        world: int = 1,
        folder: str | Path | None = None,
        reopen: bool = False,
    ):
        self.n_spans, self.dim_, self.rank, self.world = int(n_spans), int(dim), int(rank), max(int(world), 1)
        self.folder = Path(folder) if folder is not None else None
        self.row_dtype = np.dtype([("id", np.int64), ("epoch", np.int64), ("x", np.float32, (self.dim_,))])
        n_owned = len(range(self.rank, self.n_spans, self.world))
        if self.folder is None:
            x = np.zeros((n_owned, self.dim_), dtype=np.float32)
            epochs = np.full(n_owned, self.NEVER, dtype=np.int64)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not reopen:  # a new store: nothing of an earlier run in this folder counts
                self._path("pending").unlink(missing_ok=True)
            x = _open_memmap(self._path("features.npy"), np.float32, (n_owned, self.dim_), 0, reopen)
            epochs = _open_memmap(self._path("epochs.npy"), np.int64, (n_owned,), self.NEVER, reopen)
        self._x, self._epochs = x, epochs
        self.features = torch.from_numpy(x)
        self.epochs = torch.from_numpy(epochs)
        self._pending: list[np.ndarray] = []

    def _path(self, suffix: str) -> Path:
        return self.folder / f"rank{self.rank}-of-{self.world}.{suffix}"

    def __len__(self) -> int:  # every span of the corpus, owned here or not
        return self.n_spans

    @property
    def dim(self) -> int:
        return self.dim_

    @property
    def owned_spans(self) -> int:
        return int(self._epochs.shape[0])

    # -- writing ------------------------------------------------------------------------------------
    def record(self, span_ids: torch.Tensor, features: torch.Tensor, epoch: int) -> None:
        ids = np.asarray(span_ids.detach().cpu(), dtype=np.int64)
        self.put(
            ids, features.detach().float().cpu().numpy(), np.full(ids.shape[0], int(epoch), dtype=np.int64)
        )

    def put(self, ids: np.ndarray, x: np.ndarray, epochs: np.ndarray) -> None:
        """Rows of any spans: this rank's written into the store, the others' left pending."""
        mine = ids % self.world == self.rank
        self.apply(ids[mine], x[mine], epochs[mine])
        if not mine.all():
            self._add_pending(ids[~mine], x[~mine], epochs[~mine])

    def update(self, features: SpanFeatures, epoch: int) -> None:
        if len(features):
            ids = np.asarray(features.span_ids, dtype=np.int64)
            x = np.asarray(features.features, dtype=np.float32)
            self.put(ids, x, np.full(ids.shape[0], int(epoch), dtype=np.int64))

    def apply(self, span_ids: np.ndarray, features: np.ndarray, epochs: np.ndarray) -> None:
        """Write vectors of spans this rank owns; of one span's rows the last wins."""
        ids = np.asarray(span_ids, dtype=np.int64)
        if not ids.shape[0]:
            return
        if np.any(ids % self.world != self.rank) or ids.min() < 0 or ids.max() >= self.n_spans:
            raise ValueError(f"rank {self.rank} of {self.world} was handed span ids it does not own")
        last = ids.shape[0] - 1 - np.unique(ids[::-1], return_index=True)[1]  # the last row of each id
        rows = ids[last] // self.world
        self._x[rows] = np.asarray(features, dtype=np.float32)[last]
        self._epochs[rows] = np.asarray(epochs, dtype=np.int64)[last]

    def _add_pending(self, ids: np.ndarray, x: np.ndarray, epochs: np.ndarray) -> None:
        rows = np.empty(ids.shape[0], dtype=self.row_dtype)
        rows["id"], rows["epoch"], rows["x"] = ids, epochs, x
        if self.folder is None:
            self._pending.append(rows)
        else:
            with open(self._path("pending"), "ab") as handle:
                rows.tofile(handle)

    def take_pending(self) -> np.ndarray:
        """The vectors waiting for their owner (structured rows id, epoch, x), oldest first; the
        store forgets them (the caller applies them on their owners)."""
        if self.folder is None:
            rows = np.concatenate(self._pending) if self._pending else np.empty(0, dtype=self.row_dtype)
            self._pending = []
            return rows
        path = self._path("pending")
        if not path.is_file():
            return np.empty(0, dtype=self.row_dtype)
        rows = np.fromfile(path, dtype=self.row_dtype)
        path.unlink()
        return rows

    @property
    def pending(self) -> int:
        if self.folder is None:
            return sum(int(p.shape[0]) for p in self._pending)
        path = self._path("pending")
        return path.stat().st_size // self.row_dtype.itemsize if path.is_file() else 0

    def flush(self) -> None:
        for array in (self._x, self._epochs):
            if isinstance(array, np.memmap):
                array.flush()

    # -- reading ------------------------------------------------------------------------------------
    def _rows(self, mask: np.ndarray) -> SpanFeatures:
        """The owned rows of `mask`, their vectors read from the store only when sliced."""
        ids = np.flatnonzero(mask).astype(np.int64) * self.world + self.rank
        rows = self._x if bool(mask.all()) else SampleRows(self._x, np.flatnonzero(mask))
        return SpanFeatures(rows, ids)

    def recorded_in(self, epoch: int) -> SpanFeatures:
        return self._rows(self._epochs == epoch)

    def owned(self) -> SpanFeatures:
        """Every owned span with a vector, sorted by span id (the spans this rank assigns)."""
        return self._rows(self._epochs != self.NEVER)

    def empty(self) -> SpanFeatures:
        return SpanFeatures(np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64))

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """In memory: the vectors, epochs and pending rows (a single process's whole store). With a
        folder only where it is: every rank reopens its own files (Lightning saves rank 0's state)."""
        state = {"n_spans": self.n_spans, "dim": self.dim, "world": self.world}
        if self.folder is not None:
            self.flush()
            return {**state, "folder": str(self.folder)}
        pending = self.take_pending()
        self._pending = [pending] if pending.shape[0] else []
        return {
            **state,
            "features": self.features.clone(),
            "epochs": self.epochs.clone(),
            "pending_ids": torch.from_numpy(pending["id"].copy()),
            "pending_epochs": torch.from_numpy(pending["epoch"].copy()),
            "pending_features": torch.from_numpy(pending["x"].copy()),
        }

    @classmethod
    def from_state(
        cls, state: dict, rank: int = 0, world: int = 1, folder: str | Path | None = None
    ) -> SpanFeatureStore:
        """The store `state_dict` described, for `rank` of `world`; a folder store is reopened from
        `folder` (default: where it was), and one saved with another number of ranks is dealt out
        again from the files of that run."""
        if state.get("folder") is not None:
            folder, n, dim = Path(folder or state["folder"]), int(state["n_spans"]), int(state["dim"])
            saved_world = int(state.get("world", 1))
            store = cls(n, dim, rank, world, folder, reopen=saved_world == max(int(world), 1))
            if saved_world != store.world:
                store.adopt(saved_world)
            return store
        features, epochs = state["features"].float().numpy(), state["epochs"].long().numpy()
        saved_world = int(state.get("world", 1))
        n = int(state.get("n_spans", features.shape[0]))  # a checkpoint of the unsharded store: row = id
        store = cls(
            n, int(state.get("dim", features.shape[1] if features.ndim == 2 else 0)), rank, world, folder
        )
        if saved_world == store.world and folder is None:
            store._x[...], store._epochs[...] = features, epochs
        elif saved_world == 1:  # one process's whole store, dealt out to this rank
            ids = np.flatnonzero((epochs != cls.NEVER) & (np.arange(n) % store.world == store.rank))
            store.apply(ids, features[ids], epochs[ids])
        if "pending_ids" in state and state["pending_ids"].numel():
            store.put(
                state["pending_ids"].numpy(),
                state["pending_features"].numpy(),
                state["pending_epochs"].numpy(),
            )
        return store

    def adopt(self, saved_world: int) -> None:
        """Fill this store from the files of a run with `saved_world` ranks (its pending rows too)."""
        for old in range(saved_world):
            prefix = self.folder / f"rank{old}-of-{saved_world}"
            x_path, epochs_path = Path(f"{prefix}.features.npy"), Path(f"{prefix}.epochs.npy")
            if not (x_path.is_file() and epochs_path.is_file()):
                continue
            x, epochs = np.load(x_path, mmap_mode="r"), np.load(epochs_path, mmap_mode="r")
            ids = np.arange(epochs.shape[0], dtype=np.int64) * saved_world + old
            for start in range(0, ids.shape[0], 65_536):
                chunk = slice(start, start + 65_536)
                keep = (ids[chunk] % self.world == self.rank) & (epochs[chunk] != self.NEVER)
                self.apply(ids[chunk][keep], np.asarray(x[chunk])[keep], np.asarray(epochs[chunk])[keep])
            pending = Path(f"{prefix}.pending")
            if pending.is_file():
                rows = np.fromfile(pending, dtype=self.row_dtype)
                keep = rows["id"] % self.world == self.rank
                self.apply(rows["id"][keep], rows["x"][keep], rows["epoch"][keep])


def _open_memmap(path: Path, dtype, shape: tuple, fill, reopen: bool) -> np.memmap:
    """The `.npy` at `path` opened read-write (`reopen`, and it has this dtype and shape), or created
    filled with `fill`."""
    if reopen and path.is_file():
        try:
            found = np.load(path, mmap_mode="r+")
            if found.dtype == np.dtype(dtype) and found.shape == shape:
                return found
        except ValueError:
            pass
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    array[...] = fill
    return array


def span_ids_path(out_path: str | Path) -> Path:
    """Where the span ids of a features file live: `x.npy` -> `x.span_ids.npy`."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}.span_ids.npy")


def _fsync_replace(tmp: str, final: Path) -> None:
    with open(tmp, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def _atomic_save_ids(path: Path, ids: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, np.ascontiguousarray(ids, dtype=np.int64))
        _fsync_replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _FeatureWriter:
    """Streams float32 rows to a raw temporary file, then writes the final `.npy` in one rename."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim, self.rows = path, dim, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.raw = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".raw.tmp", dir=path.parent)
        self.handle = os.fdopen(fd, "wb")

    def write(self, block: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
        self.rows += block.shape[0]

    def commit(self, ids: np.ndarray) -> SpanFeatures:
        self.handle.close()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(self.raw, "rb") as raw:
                header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.dim)}
                np.lib.format.write_array_header_2_0(out, header)
                shutil.copyfileobj(raw, out, 1 << 22)
            _atomic_save_ids(span_ids_path(self.path), ids)
            _fsync_replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        finally:
            self.discard()
        return load_span_features(self.path)

    def discard(self) -> None:
        self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.raw)


def save_span_features(features: SpanFeatures, out_path: str | Path) -> Path:
    """Write `features` atomically as `out_path` (.npy float32) plus its span-id file."""
    out_path = Path(out_path)
    writer = _FeatureWriter(out_path, features.features.shape[1])
    try:
        writer.write(np.asarray(features.features))
    except BaseException:
        writer.discard()
        raise
    writer.commit(np.asarray(features.span_ids))
    return out_path


def load_span_features(path: str | Path, mmap: bool = True) -> SpanFeatures:
    """Read a features file and its span ids (features memory-mapped unless `mmap=False`)."""
    path = Path(path)
    ids_path = span_ids_path(path)
    for p in (path, ids_path):
        if not p.is_file():
            raise InputFileError(p, "span features file not found")
    try:
        features = np.load(path, mmap_mode="r" if mmap else None)
        ids = np.load(ids_path)
    except ValueError as exc:
        raise InputFileError(path, f"not a span features file ({exc})") from None
    if features.ndim != 2 or features.dtype != np.float32 or ids.shape != (features.shape[0],):
        raise InputFileError(
            path,
            f"features {features.dtype}{list(features.shape)} do not match span ids "
            f"{ids.dtype}{list(ids.shape)} in {ids_path.name} (a run stopped between the two renames?)",
        )
    return SpanFeatures(features, ids.astype(np.int64, copy=False))


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """eval() for the duration, then every submodule's own train/eval flag as it was."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def extract_span_features(
    encoder: nn.Module,
    batches: Iterable[dict],
    mode: str,
    layer: int = -1,
    device: torch.device | str | None = None,
    out_path: str | Path | None = None,
    progress: bool = True,
    suffix_len: int = 1,
) -> SpanFeatures:
    """Pooled span vectors of every span in `batches`, under `torch.no_grad()` and `encoder.eval()`.

    `batches`: dicts with `input_ids`, `attention_mask`, `word_positions`, `spans` (the
    `WindowCollator` keys) and `span_ids` (one list of ints per window, same order as `spans`).
    `layer` indexes the encoder's `hidden_states` (index 0 is the embeddings): -1 is the last layer,
    -2 the one below it (the CoFEE code used layer 11 of 12, i.e. -2). `device`: where the forward
    runs (default: the encoder's own device; the encoder is not moved). `suffix_len`: special tokens
    after the text, see `cofee.models.span_pooling.span_token_ranges`. The encoder's train/eval flags are
    restored afterwards. Returns features in batch order; with `out_path`, memory-mapped from disk.
    """
    hidden_size = encoder.config.hidden_size
    dim = pooled_dim(mode, hidden_size)
    device = torch.device(device) if device is not None else _device_of(encoder)
    writer = _FeatureWriter(Path(out_path), dim) if out_path is not None else None
    blocks: list[np.ndarray] = []
    ids: list[int] = []
    try:
        from tqdm.auto import tqdm

        total = len(batches) if hasattr(batches, "__len__") else None
        iterator = tqdm(batches, total=total, desc="span features", disable=not progress, leave=False)
        with _eval_mode(encoder), torch.no_grad():
            for batch in iterator:
                window_ids = batch["span_ids"]
                if len(window_ids) != len(batch["spans"]) or any(
                    len(i) != len(s) for i, s in zip(window_ids, batch["spans"])
                ):
                    raise ValueError("batch['span_ids'] must hold one id per span, window by window")
                if not any(window_ids):
                    continue
                hidden = _hidden(encoder, batch, layer, device)
                pooled = pool_batch_spans(hidden, batch, mode, suffix_len).float().cpu().numpy()
                ids.extend(int(i) for window in window_ids for i in window)
                if writer is not None:
                    writer.write(pooled)
                else:
                    blocks.append(pooled)
        span_ids = np.asarray(ids, dtype=np.int64)
        if writer is not None:
            return writer.commit(span_ids)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    features = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    return SpanFeatures(features, span_ids)


def _hidden(encoder: nn.Module, batch: dict, layer: int, device: torch.device) -> torch.Tensor:
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    if layer == -1:
        return encoder(**inputs).last_hidden_state
    states = encoder(**inputs, output_hidden_states=True).hidden_states
    if not -len(states) <= layer < len(states):
        raise ValueError(f"layer {layer} does not exist: the encoder has {len(states)} hidden states")
    return states[layer]
