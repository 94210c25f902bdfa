"""Stop a stage at the first non-finite loss, before that loss reaches the weights.

The check runs in `on_before_backward`, i.e. after the forward pass and before the backward pass and
the optimiser step, so the weights, the optimiser and every checkpoint already written stay those of
the last good step; raising a `CofeeError` ends the fit at once (Lightning runs no checkpoint or export
hook after it), so a stage export, the parent's export and `last.ckpt` are left as they were. The CLI
reports it on one line, exit status 2: the stage, the step, the loss.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from cofee.utils.errors import CofeeError


class NonFiniteLossError(CofeeError):
    """The training loss of a stage became NaN or infinite."""


class FiniteLossGuard(pl.Callback):
    def __init__(self, stage: str):
        self.stage = stage
        self.batch_idx: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_idx = batch_idx

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        value = float(loss.detach().float().mean()) if loss.numel() else 0.0
        if math.isfinite(value):
            return
        raise NonFiniteLossError(
            f"stage '{self.stage}': the training loss is {value} at step {trainer.global_step + 1} "
            f"(epoch {trainer.current_epoch}, batch {self.batch_idx}); stopped before this update: "
            "the weights, the last checkpoint and the parent export are those of the last good step "
            "(lower the learning rate, or check the data of this batch)"
        )
