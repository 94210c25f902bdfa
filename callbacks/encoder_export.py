"""Exports the stage's encoder when fit ends: rank 0 writes, every rank waits for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.export import export_encoder


class EncoderExportCallback(pl.Callback):
    def __init__(self, out_dir: str | Path, tokenizer: PreTrainedTokenizerBase, manifest: Callable[[], dict]):
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.manifest = manifest  # called at export time, so it can include data counts
        self.exported: dict | None = None

    @staticmethod
    def final_metrics(trainer: pl.Trainer) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items())}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted:
            return  # an interrupted stage is resumed, never exported half-trained
        if trainer.is_global_zero:
            manifest = {
                **self.manifest(),
                "metrics": self.final_metrics(trainer),
                "global_step": trainer.global_step,
            }
            self.exported = export_encoder(
                pl_module.encoder,
                self.tokenizer,
                self.out_dir,
                manifest,
                head=getattr(pl_module, "head", None),
            )
        trainer.strategy.barrier("encoder-export")
