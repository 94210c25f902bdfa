"""Dynamic padding and length-bucketed batches, shared by every data module.

Bucketing: shuffle, cut into pools of `batch_size * pool_factor`, sort each pool by length, cut into
batches, shuffle the batches. Similar lengths share a batch, so little compute goes to padding, while
the order stays random. The sampler is seeded by (seed, epoch) and shards itself across DDP ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from cofee.alignment import IGNORE_INDEX, EncodedWindow


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class LengthBucketBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        bucket: bool = True,
        pool_factor: int = 50,
        drop_last: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.pool_factor = pool_factor
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        if self.bucket:
            pool = self.batch_size * self.pool_factor
            pools = [order[i : i + pool] for i in range(0, len(order), pool)]
            # stable sort keeps the shuffled order among equal lengths
            order = np.concatenate([p[np.argsort(self.lengths[p], kind="stable")] for p in pools] or [order])
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle and self.bucket:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _world()
        batches = self._all_batches()
        if world > 1 and batches:
            # every rank needs the same number of steps: repeat leading batches to fill the last round
            total = math.ceil(len(batches) / world) * world
            batches = batches + batches[: total - len(batches)]
            batches = batches[rank::world]
        return iter(batches)

    def __len__(self) -> int:
        _, world = _world()
        n = len(self.lengths)
        count = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return math.ceil(count / world)


class WindowCollator:
    """Pads a list of EncodedWindow to the longest in the batch (or to `pad_to`, for fixed padding)."""

    def __init__(self, pad_token_id: int, pad_to: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to

    def __call__(self, windows: Sequence[EncodedWindow]) -> dict:
        width = self.pad_to or max(len(w) for w in windows)
        input_ids = torch.full((len(windows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(windows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(windows), width), dtype=torch.long)
        for row, window in enumerate(windows):
            n = len(window)
            input_ids[row, :n] = torch.tensor(window.input_ids)
            labels[row, :n] = torch.tensor(window.labels)
            attention[row, :n] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "word_positions": [w.word_positions for w in windows],
            "spans": [w.spans for w in windows],
        }
        if windows and all(w.span_ids is not None for w in windows):
            batch["span_ids"] = [w.span_ids for w in windows]  # one id per span (stage 3)
        return batch


def window_loader(
    windows: Sequence[EncodedWindow],
    batch_size: int,
    train: bool,
    pad_token_id: int,
    seed: int = 0,
    bucket: bool = True,
    num_workers: int = 0,
) -> DataLoader:
    """The loader every stage uses: length-bucketed (always for evaluation), shuffled when training."""
    sampler = LengthBucketBatchSampler(
        [len(w) for w in windows], batch_size, shuffle=train, seed=seed, bucket=bucket or not train
    )
    return DataLoader(
        windows, batch_sampler=sampler, collate_fn=WindowCollator(pad_token_id), num_workers=num_workers
    )


class TrainValWindowLoaders:
    """Train and dev loaders for a data module that holds `train_windows` and `val_windows` (and
    `tokenizer`, `batch_size`, `eval_batch_size`, `seed`, `bucket`, `num_workers`)."""

    def train_dataloader(self) -> DataLoader:
        return window_loader(
            self.train_windows, self.batch_size, True, self.tokenizer.pad_token_id, **self._loading
        )

    def val_dataloader(self) -> DataLoader:
        return window_loader(
            self.val_windows, self.eval_batch_size, False, self.tokenizer.pad_token_id, **self._loading
        )

    @property
    def _loading(self) -> dict:
        return {"seed": self.seed, "bucket": self.bucket, "num_workers": self.num_workers}
