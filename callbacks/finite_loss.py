"""Stop a stage at the first non-finite loss, before that loss reaches the weights.

The check runs in `on_before_backward`, i.e. after the forward pass and before the backward pass and
the optimiser step, so the weights, the optimiser and every checkpoint already written stay those of
the last good step; raising a `CofeeError` ends the fit at once (Lightning runs no checkpoint or export
hook after it), so a stage export, the parent's export and `last.ckpt` are left as they were. The CLI
reports it on one line, exit status 2: the stage, the step, the loss.

Under DDP the decision is collective: every rank gathers every rank's loss each step (one scalar a
rank) and all raise together, with the same message naming the ranks at fault. A rank that stopped
alone would leave the others waiting in the backward pass's gradient all-reduce until it times out.
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

    @staticmethod
    def rank_losses(trainer, loss: torch.Tensor) -> list[float]:
        """This step's loss of every rank, in rank order (one all-gather of a scalar under DDP)."""
        value = loss.detach().float().mean() if loss.numel() else loss.new_zeros((), dtype=torch.float32)
        if trainer.world_size <= 1:
            return [float(value)]
        return [float(v) for v in trainer.strategy.all_gather(value).reshape(-1)]

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        losses = self.rank_losses(trainer, loss)
        bad = [rank for rank, value in enumerate(losses) if not math.isfinite(value)]
        if not bad:
            return
        where = f"epoch {trainer.current_epoch}, batch {self.batch_idx}"
        if len(losses) > 1:
            ranks = "rank" if len(bad) == 1 else "ranks"
            where += f", {ranks} {', '.join(map(str, bad))} of {len(losses)}"
        raise NonFiniteLossError(
            f"stage '{self.stage}': the training loss is {losses[bad[0]]} at step {trainer.global_step + 1} "
            f"({where}); stopped before this update: "
            "the weights, the last checkpoint and the parent export are those of the last good step "
            "(lower the learning rate, or check the data of this batch)"
        )
