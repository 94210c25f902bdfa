"""Keeps the weights of the best dev score in memory and restores them when fit ends.

Model selection on dev only, without writing a checkpoint per study run to disk.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl


class KeepBestWeights(pl.Callback):
    def __init__(self, monitor: str, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.best_score: float | None = None
        self.best_step: int | None = None
        self._best_state: dict | None = None

    def _better(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.mode == "max" else score < self.best_score

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if self._better(score):
            self.best_score, self.best_step = score, trainer.global_step
            self._best_state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._best_state is not None:
            pl_module.load_state_dict(copy.deepcopy(self._best_state))

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_step = state_dict.get("best_step")
