"""What makes a stage resumable exactly: `last.ckpt` written often and at every epoch end, and a
random stream that does not depend on where the run was stopped.

- `last_checkpoints`: two `ModelCheckpoint`s writing the same real file `last.ckpt`, one every N
  optimizer steps (a preempted run loses at most N steps) and one at every epoch end (after the
  epoch-end callbacks: a cluster refresh is in it). Lightning 2.6 writes `save_last` at epoch end
  only together with a top-k save, so both save "top-1 without a monitor" under the name `last`
  (docs/design.md, "Lightning and resuming"); the version counter is off, so the file is replaced,
  never `last-v1.ckpt`.
- `AtomicCheckpointIO`: the checkpoint is written next to its target and renamed into place, so a
  job killed while saving keeps the previous `last.ckpt` whole (Lightning's own save stages the file
  in the system temp folder and, when that is another file system, copies it into place).
- `StepSeedCallback`: before every training batch the torch generators (CPU and CUDA) are seeded
  from (seed, epoch, batch index, rank). Dropout then depends only on the batch being trained, so a
  run resumed from a checkpoint draws what the uninterrupted run drew, whatever else (data loader
  iterators, a sanity check, a previous stage in the same process) touched the global generator in
  between. Ranks draw different masks.
- `LoaderPositionCallback`: Lightning 2.6 hands a stateful train loader its saved position only
  when it builds the loader after the restore (`FitLoop.setup_data`). A `configure_optimizers` that
  reads `trainer.estimated_stepping_batches` (every stage's schedule does) builds it before, and the
  position would be dropped: the resumed epoch would replay its first batches (Lightning issue
  20550). The callback keeps the position in its own checkpoint state (`state_dict` /
  `load_state_dict`, restored before the loader is built) and hands it to the train loader at train
  start, before the first batch is drawn (the loader's iterator is lazy). Where Lightning restored it
  already, this sets the same position again.

The batch order is restored by the loader (`cofee.data_modules.batching.ResumableLoader`, a torchdata
`StatefulDataLoader`); callback states (self-training relabels, cluster labels), optimizer,
scheduler, epoch and step by Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

LAST = "last"


def last_checkpoints(dirpath: str | Path, every_n_steps: int | None) -> list[ModelCheckpoint]:
    """`<dirpath>/last.ckpt` every `every_n_steps` optimizer steps (None or 0: only at epoch ends)
    and at the end of every epoch."""
    common = {
        "dirpath": str(dirpath),
        "filename": LAST,
        "monitor": None,
        "save_top_k": 1,
        "save_last": False,
        "enable_version_counter": False,
    }
    callbacks = [ModelCheckpoint(every_n_epochs=1, **common)]
    if every_n_steps:
        callbacks.insert(0, ModelCheckpoint(every_n_train_steps=int(every_n_steps), **common))
    return callbacks


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            with open(partial, "wb") as out:
                torch.save(checkpoint, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    return int(
        np.random.SeedSequence([int(seed), int(epoch), int(batch_idx), int(rank)]).generate_state(1)[0]
    )


class StepSeedCallback(pl.Callback):
    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int
    ) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank))


class LoaderPositionCallback(pl.Callback):
    """Saves the train loader's position with the callback states and gives it back at train start.

    Public hooks only: `state_dict` is called on every checkpoint save (the trainer is kept from
    `setup`), `load_state_dict` on a restore (before `configure_optimizers`), `on_train_start` after
    the train loader is built and before its first batch. A train loader is one with `state_dict` and
    `load_state_dict` (`ResumableLoader`); any other is left alone.
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._position: dict | None = None  # restored, not yet handed to the loader

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = None

    @staticmethod
    def _loader(trainer: pl.Trainer | None):
        loader = trainer.train_dataloader if trainer is not None else None
        stateful = all(callable(getattr(loader, name, None)) for name in ("state_dict", "load_state_dict"))
        return loader if stateful else None

    def state_dict(self) -> dict[str, Any]:
        loader = self._loader(self._trainer)
        return {"position": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._position = state_dict.get("position")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        position, self._position = self._position, None
        loader = self._loader(trainer)
        if position is not None and loader is not None:
            loader.load_state_dict(position)
