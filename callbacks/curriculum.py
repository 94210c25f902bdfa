"""The hand-off of one curriculum stage to the next: what it starts from, and what it leaves behind.

`CurriculumCallback` is the one callback of a stage's Trainer that deals with exports:

- fit start (every rank): the parent export the stage starts from (`init_from`, the previous stage's
  `encoder/`) must still hold the manifest whose hash the stage's inputs record (`inputs["parent"]`,
  the hash that decided whether the stage was up to date). A parent replaced since then (the encoder
  and the data were read from it) is refused, naming the file, rather than trained on silently.
- fit end, unless the fit was interrupted (an interrupted stage is resumed, never exported
  half-trained): rank 0 exports the encoder, its span head and the manifest (`models/export.py`):
  stage, the hash of its inputs and the inputs themselves, the hash and counts of the data manifest,
  the parent's manifest hash and path, what the other callbacks add (`manifest_entry()`: FET's
  clustering history), the final metrics and the global step. Every rank waits at a barrier, then rank
  0 records the export with `log_export` (a W&B artifact reference, given by the orchestrator, which
  owns the loggers).

The orchestrator (`cofee.pipeline.curriculum`) decides which stages run, resume or are reused, and
builds each stage's Trainer with this callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.models.export import MANIFEST, export_encoder, manifest_hash, read_export_manifest
from cofee.utils.errors import InputFileError
from cofee.utils.io import stable_hash

METRICS_KEY = "cofee_stage_metrics"  # the stage's metrics so far, in every checkpoint it saves


class CurriculumCallback(pl.Callback):
    def __init__(
        self,
        stage: str,
        out_dir: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        inputs: dict,
        config: dict,
        init_from: str | Path | None = None,
        log_export: Callable[..., object] | None = None,
    ):
        """`inputs`: what the stage's result depends on (`stage_inputs`; `inputs["parent"]` is the
        parent export's manifest hash, None for a first stage); `config`: the manifest's `config`
        entry; `log_export(loggers, folder, manifest=...)`: records the export (rank 0, after it)."""
        self.stage = stage
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.inputs = inputs
        self.config = config
        self.init_from = Path(init_from) if init_from is not None else None
        self.parent = inputs.get("parent")
        self.log_export = log_export
        self.started = time.time()  # the manifest's `seconds`: data preparation included
        self.exported: dict | None = None
        # the metrics saved with the checkpoint this fit resumed from: a stage killed during its
        # export resumes with nothing left to train, and its fit then logs no metrics of its own
        self.restored_metrics: dict[str, float] = {}

    # -- fit start: the parent ------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check_parent()

    def check_parent(self) -> None:
        """The parent export still holds the manifest this stage's inputs name."""
        if self.init_from is None:
            return
        found = manifest_hash(read_export_manifest(self.init_from))
        if found != self.parent:
            raise InputFileError(
                self.init_from / MANIFEST,
                f"the {self.stage} stage starts from export {self.parent}, but this folder now holds "
                f"{found} (replaced while the stage started?); run it again to train from the new export",
            )

    # -- fit end: the export --------------------------------------------------------------------
    @staticmethod
    def final_metrics(trainer: pl.Trainer) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items())}

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[METRICS_KEY] = self.final_metrics(trainer) or self.restored_metrics

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self.restored_metrics = dict(checkpoint.get(METRICS_KEY, {}))

    def manifest(self, trainer: pl.Trainer) -> dict:
        """The export's manifest, less the fields `export_encoder` adds (format, version, time, head)."""
        data_manifest = getattr(trainer.datamodule, "manifest", None)
        # what the data module adds (its sampling, token cache and parent spans), then the callbacks
        extras = dict(getattr(trainer.datamodule, "manifest_entry", dict)())
        for callback in trainer.callbacks:  # what a stage callback adds (FET: the clustering history)
            if callback is not self:
                extras.update(getattr(callback, "manifest_entry", dict)())
        return {
            "stage": self.stage,
            "config_hash": stable_hash(self.inputs),
            "config": self.config,
            "inputs": self.inputs,
            "data_manifest_hash": stable_hash(data_manifest) if data_manifest else None,
            "data_counts": (data_manifest or {}).get("counts"),
            "parent": self.parent,
            "parent_path": str(self.init_from) if self.init_from else None,
            "seconds": round(time.time() - self.started, 2),
            **extras,
            "metrics": self.final_metrics(trainer) or self.restored_metrics,
            "global_step": trainer.global_step,
        }

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted:
            return  # an interrupted stage is resumed, never exported half-trained
        if trainer.is_global_zero:
            self.exported = export_encoder(
                pl_module.encoder,
                self.tokenizer,
                self.out_dir,
                self.manifest(trainer),
                head=getattr(pl_module, "head", None),
            )
        trainer.strategy.barrier("encoder-export")
        if self.exported is not None and self.log_export is not None and trainer.is_global_zero:
            self.log_export(trainer.loggers, self.out_dir, manifest=self.exported)
