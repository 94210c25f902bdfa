"""Span features for clustering: pooled hidden states of every span, keyed by a global span id.

`extract_span_features` runs the encoder over batches of the `WindowCollator` shape that also carry
`span_ids` (one list per window, aligned with `spans`), pools each span (`cofee.models.span_pooling`) from a
chosen layer, and returns float32 features with their int64 span ids, in the order the batches gave
them. With `out_path` the features are streamed to disk and come back memory-mapped, so a corpus of
millions of spans never sits in RAM twice.

`SpanFeatureStore` keeps the newest vector of every training span in memory, by span id, with the
epoch it was recorded in: FET writes into it while it trains, the cluster refresh reads it back.

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
    """The newest pooled vector of every training span, by global span id, and the epoch it is from.

    `epochs[i]`: -2 never seen, -1 from the extraction pass at train start, e >= 0 recorded in epoch e.
    """

    NEVER, EXTRACTED = -2, -1

    def __init__(self, n_spans: int, dim: int):
        self.features = torch.zeros((n_spans, dim), dtype=torch.float32)
        self.epochs = torch.full((n_spans,), self.NEVER, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.epochs.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def record(self, span_ids: torch.Tensor, features: torch.Tensor, epoch: int) -> None:
        ids = span_ids.detach().cpu().long()
        self.features[ids] = features.detach().float().cpu()
        self.epochs[ids] = int(epoch)

    def update(self, features: SpanFeatures, epoch: int) -> None:
        if len(features):
            self.record(
                torch.from_numpy(features.span_ids), torch.from_numpy(np.asarray(features.features)), epoch
            )

    def _rows(self, mask: torch.Tensor) -> SpanFeatures:
        rows = torch.nonzero(mask).squeeze(1)
        return SpanFeatures(self.features[rows].numpy(), rows.numpy().astype(np.int64))

    def recorded_in(self, epoch: int) -> SpanFeatures:
        return self._rows(self.epochs == epoch)

    def owned(self, rank: int, world: int) -> SpanFeatures:
        """The spans with a vector whose id is `rank` modulo `world` (the spans this rank assigns)."""
        ids = torch.arange(len(self))
        return self._rows((self.epochs != self.NEVER) & (ids % max(world, 1) == rank))

    def known(self) -> SpanFeatures:
        """Every span with a vector, sorted by span id."""
        return self._rows(self.epochs != self.NEVER)

    def empty(self) -> SpanFeatures:
        return SpanFeatures(np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64))

    def state_dict(self) -> dict:
        return {"features": self.features.clone(), "epochs": self.epochs.clone()}

    @classmethod
    def from_state(cls, state: dict) -> SpanFeatureStore:
        store = cls(0, 0)
        store.features = state["features"].float().clone()
        store.epochs = state["epochs"].long().clone()
        return store


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
