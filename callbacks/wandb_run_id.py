"""Stores the W&B run id in every stage checkpoint, so a resumed stage continues the same run.

`read_run_id(last.ckpt)` gives it back before the logger is built; the logger then passes
`id=<stored>` with `resume="allow"` (online, the same run continues; offline, wandb writes a second
folder with the same id, PITFALLS.md).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from cofee.loggers import run_id

CHECKPOINT_KEY = "wandb_run_id"


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
