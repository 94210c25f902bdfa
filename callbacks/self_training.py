"""Self-training for NEE (BOND-style): a teacher relabels a share of the training windows each round.

At the start of every epoch after the first, the model as it stands (the teacher: it has seen one
more round than the labels it is about to replace) predicts a seeded random share of the training
windows; each word whose top label has probability >= `threshold` takes that label, the rest keep
their distant label. The relabelled windows are stored in the checkpoint, so a resumed run trains on
exactly the labels an uninterrupted one would. The teacher reads the windows through the training
loader's own collator (`trainer.train_dataloader.collate_fn`), so they are batched as in training.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch


class SelfTrainingCallback(pl.Callback):
    def __init__(self, rate: float, threshold: float, seed: int, batch_size: int = 64):
        if not 0 < rate <= 1:
            raise ValueError(f"relabel rate must lie in (0, 1], got {rate}")
        self.rate = rate
        self.threshold = threshold
        self.seed = seed
        self.batch_size = batch_size
        self.relabelled: dict[int, list[int]] = {}
        self.rounds: list[dict] = []
        self._relog: dict | None = None

    # -- checkpointed state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"relabelled": self.relabelled, "rounds": self.rounds}

    def load_state_dict(self, state: dict) -> None:
        self.relabelled = {int(k): v for k, v in state["relabelled"].items()}
        self.rounds = list(state["rounds"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        windows = trainer.datamodule.train_windows
        for index, labels in self.relabelled.items():  # a resumed run: put back what the teacher said
            windows[index].labels = list(labels)
        # resumed inside an epoch whose round already ran: log its count again, as that epoch did
        self._relog = next((r for r in self.rounds if r["epoch"] == trainer.current_epoch), None)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx
    ) -> None:
        if self._relog is not None:
            self._log_round(pl_module, self._relog["changed_words"])
            self._relog = None

    @staticmethod
    def _log_round(pl_module: pl.LightningModule, changed: int) -> None:
        pl_module.log(
            f"{pl_module.stage_name}/train/relabelled_words", float(changed), on_step=False, on_epoch=True
        )

    # -- one round --------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch == 0 or any(r["epoch"] == epoch for r in self.rounds):
            return
        windows = trainer.datamodule.train_windows
        rng = np.random.default_rng([self.seed, epoch])
        chosen = sorted(rng.choice(len(windows), size=math.ceil(self.rate * len(windows)), replace=False))
        changed = self._relabel(pl_module, windows, chosen, trainer.train_dataloader.collate_fn)
        self.rounds.append({"epoch": epoch, "windows": len(chosen), "changed_words": changed})
        self._log_round(pl_module, changed)

    def _relabel(
        self, pl_module: pl.LightningModule, windows: list, chosen: list[int], collate: Callable
    ) -> int:
        """Relabel the `chosen` windows in place; `collate` batches a list of windows."""
        was_training = pl_module.training
        pl_module.eval()
        changed = 0
        with torch.no_grad():
            for start in range(0, len(chosen), self.batch_size):
                indices = chosen[start : start + self.batch_size]
                batch = collate([windows[i] for i in indices])
                batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                probs = pl_module(batch).float().softmax(-1)
                confidence, best = probs.max(-1)
                for row, index in enumerate(indices):
                    labels = list(windows[index].labels)
                    for position in windows[index].word_positions:
                        if (
                            confidence[row, position] >= self.threshold
                            and labels[position] != best[row, position]
                        ):
                            labels[position] = int(best[row, position])
                            changed += 1
                    windows[index].labels = labels
                    self.relabelled[int(index)] = labels
        pl_module.train(was_training)
        return changed
