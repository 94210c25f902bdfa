"""Stores the W&B run id in every stage checkpoint, so a resumed stage continues the same run.

`read_run_id(last.ckpt)` gives it back before the logger is built; the logger then passes
`id=<stored>` with `resume="allow"` (online, the same run continues; offline, wandb writes a second
folder with the same id; docs/design.md, "Weights & Biases").
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

CHECKPOINT_KEY = "wandb_run_id"


def run_id(logger) -> str | None:
    """The id of the W&B run behind a logger (or a list of loggers), or None when there is none."""
    loggers = logger if isinstance(logger, list | tuple) else [logger]
    for item in loggers:
        if isinstance(item, WandbLogger):
            return item.version
    return None


class WandbRunIdCallback(pl.Callback):
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        current = run_id(trainer.loggers)
        if current:
            checkpoint[CHECKPOINT_KEY] = current


def read_run_id(checkpoint: str | Path | None) -> str | None:
    """The run id stored in a checkpoint, or None (no file, or no W&B run when it was written)."""
    if checkpoint is None or not Path(checkpoint).is_file():
        return None
    import torch

    # mmap: only the few bytes read are loaded, not the weights and optimiser state
    state = torch.load(str(checkpoint), map_location="cpu", mmap=True, weights_only=False)
    value = state.get(CHECKPOINT_KEY)
    return str(value) if value else None
