"""Dynamic padding and length-bucketed batches, shared by every data module.

Bucketing: shuffle, cut into pools of `batch_size * pool_factor`, sort each pool by length, cut into
batches, shuffle the batches. Similar lengths share a batch, so little compute goes to padding, while
the order stays random. The sampler is seeded by (seed, epoch) and shards itself across DDP ranks:
training shards are padded with repeated batches so every rank takes the same number of steps;
evaluation shards are not (no window is scored twice; ranks may run one batch more or less).

Resuming mid-epoch (docs/design.md, "Lightning and resuming"): Lightning 2.x restores its batch
counter but restarts a plain DataLoader from its first batch, and never calls `set_epoch` on a batch
sampler (only on `loader.sampler` and `loader.batch_sampler.sampler`).

- `LengthBucketBatchSampler` is stateful in torchdata's sense (`state_dict` / `load_state_dict`):
  its state is its position, the batches of the epoch its iterator handed out on this rank. A
  restored sampler's next iteration of that epoch skips them; `set_epoch` to another epoch drops the
  position. Its iterator is lazy: epoch and position are read at the first batch.
- `ResumableLoader` is a torchdata `StatefulDataLoader`, which calls the sampler's `state_dict` with
  every batch it hands out (in worker processes, batches are fetched ahead: torchdata keeps the
  sampler state that goes with the last batch handed out). Its checkpointed state is that sampler
  state, so a checkpoint does not depend on the number of worker processes. Lightning saves it with
  the train loop (`state_dict` of a stateful train loader) and restores it when it builds the loader
  after the restore; `cofee.callbacks.resume.LoaderPositionCallback` restores it through public
  callback hooks when the loader was built before (Lightning issue 20550).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

from cofee.data.alignment import IGNORE_INDEX, EncodedWindow


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
        equal_shards: bool | None = None,
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
        # DDP: pad shards to equal length (training: every rank must step together); default = shuffle
        self.equal_shards = shuffle if equal_shards is None else equal_shards
        self.epoch = 0
        self.consumed = 0  # batches of `epoch` the latest iteration handed out (a resumed one: skipped too)
        # a restored position not yet applied: (epoch, batches handed out, number of ranks then)
        self._resume: tuple[int, int, int] | None = None

    @property
    def sampler(self) -> LengthBucketBatchSampler:
        """Lightning calls `set_epoch` on `loader.batch_sampler.sampler`, never on the batch sampler
        itself: this makes it reach ours, so every epoch gets its own order."""
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a position belongs to its epoch
            self.consumed, self._resume = 0, None
        self.epoch = epoch

    # -- position (torchdata `Stateful`) ---------------------------------------------------------
    def state_dict(self) -> dict:
        if self._resume is not None:  # restored, not iterated since: the position as it was saved
            epoch, consumed, world = self._resume
            return {"epoch": epoch, "consumed": consumed, "seed": self.seed, "world": world}
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "world": _world()[1]}

    def load_state_dict(self, state: dict) -> None:
        """The next iteration of `state['epoch']` skips the batches it had handed out; `set_epoch`
        to any other epoch before it starts (Lightning moved on: the epoch had ended) drops them."""
        self.epoch = int(state["epoch"])
        self.consumed = int(state.get("consumed", 0))
        self._resume = (self.epoch, self.consumed, int(state.get("world", 1)))

    def _resume_skip(self) -> int:
        """The batches the starting iteration skips: those a restored position had handed out of this
        same epoch, once; 0 otherwise. Resumed on another number of ranks, each rank skips its share
        of the batches all ranks had taken (approximately: shards are cut anew)."""
        resume, self._resume = self._resume, None
        if resume is None or resume[0] != self.epoch:
            return 0
        _, consumed, world = resume
        now = _world()[1]
        return consumed if world == now else consumed * world // now

    # -- batches ----------------------------------------------------------------------------------
    # A plan is (order, size, ids): batch `b` is `order[b * size : (b + 1) * size]`, and `ids` lists the
    # batches in the order they are handed out. Arrays only, so an epoch over tens of millions of windows
    # costs a few bytes per window, never a Python list of them.
    def _world_plan(self, world: int) -> tuple[np.ndarray, int, np.ndarray]:
        if world > 1 and not self.equal_shards:
            # evaluation: smaller batches when there are fewer than ranks, so no rank is left empty
            n = len(self.lengths)
            size = min(self.batch_size, max(1, math.ceil(n / world)))
            if size != self.batch_size:
                return self._plan(size)
        return self._plan()

    def _plan(self, batch_size: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
        batch_size = batch_size or self.batch_size
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            pool = batch_size * self.pool_factor
            pools = [order[i : i + pool] for i in range(0, n, pool)]
            # stable sort keeps the shuffled order among equal lengths
            order = np.concatenate([p[np.argsort(self.lengths[p], kind="stable")] for p in pools] or [order])
        count = math.ceil(n / batch_size)
        if self.drop_last and count and n % batch_size:
            count -= 1
        ids = np.arange(count)
        if self.shuffle and self.bucket:
            ids = rng.permutation(count)
        return order, batch_size, ids

    @staticmethod
    def _batches(order: np.ndarray, size: int, ids: np.ndarray) -> Iterator[list[int]]:
        for b in ids.tolist():
            yield order[b * size : (b + 1) * size].tolist()

    def _all_batches(self, batch_size: int | None = None) -> list[list[int]]:
        return list(self._batches(*self._plan(batch_size)))

    def _rank_plan(self) -> tuple[np.ndarray, int, np.ndarray]:
        rank, world = _world()
        order, size, ids = self._world_plan(world)
        if world > 1 and len(ids):
            if self.equal_shards or len(ids) < world:
                # every rank needs the same number of steps: repeat leading batches to fill the last round
                total = math.ceil(len(ids) / world) * world
                ids = ids[np.arange(total) % len(ids)]
            ids = ids[rank::world]
        return order, size, ids

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, in order."""
        return list(self._batches(*self._rank_plan()))

    def __iter__(self) -> Iterator[list[int]]:
        # a generator: nothing runs before the first batch is asked for, so an epoch or position set
        # after `iter()` (torch calls it when it builds a loader iterator) still applies
        start = self._resume_skip()
        self.consumed = start
        order, size, ids = self._rank_plan()
        for batch in self._batches(order, size, ids[start:]):
            self.consumed += 1
            yield batch

    def __len__(self) -> int:
        _, world = _world()
        if world > 1 and not self.equal_shards:
            return len(self._rank_plan()[2])  # shards differ by a batch
        n = len(self.lengths)
        count = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return math.ceil(count / world)


# torchdata's state layout: with worker processes, the main process's state with the last batch
# handed out is in a snapshot (taken with every batch: `snapshot_every_n_steps=1`)
_SNAPSHOT, _MAIN_SNAPSHOT, _STEPS_SINCE_SNAPSHOT = "_snapshot", "_main_snapshot", "_steps_since_snapshot"
_INDEX_SAMPLER_STATE = "_index_sampler_state"


class ResumableLoader(StatefulDataLoader):
    """A `StatefulDataLoader` whose state is its batch sampler's position at the last batch handed out.

    Lightning saves `state_dict()` of a stateful train loader in its checkpoints and calls
    `load_state_dict` on the loader it builds after the restore (`LoaderPositionCallback` does when
    the loader was built before). The state is the sampler's (`LengthBucketBatchSampler.state_dict`),
    as torchdata recorded it with the last batch the loader returned: batches that worker processes
    fetched ahead and training never saw are not in it. `load_state_dict` hands the position to the
    sampler at once. The loader's iterator starts torchdata's at its first `next()`: Lightning creates
    it before it calls `set_epoch`, and a self-training round relabels windows at epoch start (a
    resumed run at train start), which worker processes must see.
    """

    def __init__(self, *args, **kwargs):
        if kwargs.get("snapshot_every_n_steps", 1) != 1 or not kwargs.get("in_order", True):
            raise ValueError("ResumableLoader needs snapshot_every_n_steps=1 and in_order=True")
        super().__init__(*args, **kwargs)
        if not callable(getattr(self.batch_sampler, "load_state_dict", None)):
            raise TypeError(f"{type(self.batch_sampler).__name__} has no state_dict / load_state_dict")
        self._started = False  # whether an iterator of this loader has started since the last restore

    def __iter__(self) -> Iterator:
        return self._deferred()

    def _deferred(self) -> Iterator:
        batches = super().__iter__()
        self._started = True
        yield from batches

    def state_dict(self) -> dict:
        if not self._started:  # nothing handed out since the restore (or ever): the sampler's position
            return self.batch_sampler.state_dict()
        state = super().state_dict()
        if _SNAPSHOT in state:
            if state[_STEPS_SINCE_SNAPSHOT]:
                raise RuntimeError("torchdata's state is not from the last batch handed out")
            state = state[_SNAPSHOT][_MAIN_SNAPSHOT]
        if _INDEX_SAMPLER_STATE not in state:
            raise RuntimeError(f"no batch sampler state in the torchdata state (keys {sorted(state)})")
        return state[_INDEX_SAMPLER_STATE]

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict({})  # drops a started iterator; the next one starts from the sampler
        self._started = False
        self.batch_sampler.load_state_dict(state)


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
    """The loader every stage uses: length-bucketed (always for evaluation), shuffled when training;
    a training loader is resumable mid-epoch (`ResumableLoader`)."""
    lengths = getattr(windows, "lengths", None)  # a token cache view holds them as one array
    lengths = [len(w) for w in windows] if lengths is None else lengths
    sampler = LengthBucketBatchSampler(
        lengths, batch_size, shuffle=train, seed=seed, bucket=bucket or not train
    )
    kind = ResumableLoader if train else DataLoader
    return kind(
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
