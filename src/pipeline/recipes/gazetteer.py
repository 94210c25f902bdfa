"""What the NEE and FET recipes share: the gazetteer-labelled data and the self-training callback."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from cofee.callbacks.self_training import SelfTrainingCallback
from cofee.config import NEEStageConfig, RootConfig


def gazetteer_data_module(
    kind: type, cfg: RootConfig, stage: NEEStageConfig, tokenizer, init_from: Path | None
):
    """The gazetteer-labelled data of NEE and FET (`kind`: the data module class)."""
    gazetteer, anchors = cfg.data.gazetteer, cfg.data.anchors
    return kind(
        tokenizer=tokenizer,
        types=gazetteer.types,
        gazetteer=gazetteer,
        anchors=anchors,
        scheme=stage.scheme,
        esi_export=init_from if stage.noise.esi_spans and stage.noise.strategy != "none" else None,
        max_length=anchors.max_length,
        batch_size=stage.batch_size,
        eval_batch_size=stage.eval_batch_size,
        dev_fraction=anchors.dev_fraction,  # the same dev pages as ESI
        split_seed=anchors.split_seed,
        max_train_sentences=stage.max_train_sentences,
        seed=cfg.seed,
        bucket=anchors.bucket,
        num_workers=anchors.num_workers,
        # the token cache: `anchors.cache_dir` and `anchors.num_proc`, read from `anchors`
        sample_key=f"stages.{stage.name}.max_train_sentences",
    )


def self_training(cfg: RootConfig, stage: NEEStageConfig) -> list[pl.Callback]:
    if stage.noise.strategy != "self_training":
        return []
    noise = stage.noise
    return [
        SelfTrainingCallback(noise.relabel_rate, noise.relabel_threshold, cfg.seed, stage.eval_batch_size)
    ]
