"""Run the curriculum: each stage a Trainer fit that starts from the previous stage's export.

Layout of a run: outputs/<run>/<stage>/{checkpoints/, encoder/ (export + manifest.json), logs/}.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from cofee.callbacks.encoder_export import EncoderExportCallback
from cofee.data_modules.wiki_anchor import WikiAnchorDataModule

from .config import RootConfig, to_plain
from .export import MANIFEST, load_start, manifest_hash, read_export_manifest
from .io_utils import stable_hash
from .stages.esi import ENTITY_TYPE, ESIModule

log = logging.getLogger(__name__)


def build_esi(cfg: RootConfig, encoder, tokenizer) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    stage = cfg.stages.esi
    module = ESIModule(encoder, stage.optim, scheme=stage.scheme, dropout=stage.dropout)
    data = cfg.data.anchors
    datamodule = WikiAnchorDataModule(
        tokenizer=tokenizer,
        label2id=module.head.label2id,
        corpus_dir=data.corpus_dir,
        dump=data.dump,
        build=data.build,
        build_workers=data.build_workers,
        scheme=stage.scheme,
        entity_type=ENTITY_TYPE,
        span_kinds=tuple(data.span_kinds),
        max_length=data.max_length,
        batch_size=stage.batch_size,
        eval_batch_size=stage.eval_batch_size,
        dev_fraction=data.dev_fraction,
        split_seed=data.split_seed,
        max_train_sentences=data.max_train_sentences,
        seed=cfg.seed,
        bucket=data.bucket,
        num_workers=data.num_workers,
    )
    return module, datamodule


STAGE_BUILDERS = {"esi": build_esi}
STAGE_DATA = {"esi": "anchors"}


def stage_config_hash(cfg: RootConfig, stage: str, parent: str | None) -> str:
    """What a stage's result depends on: encoder, its data config, its training config, seed, parent."""
    return stable_hash(
        {
            "model": to_plain(cfg.model) if parent is None else None,
            "data": to_plain(getattr(cfg.data, STAGE_DATA[stage])),
            "stage": to_plain(getattr(cfg.stages, stage)),
            "trainer": {
                k: v for k, v in asdict(cfg.trainer).items() if k in ("precision", "gradient_clip_val")
            },
            "seed": cfg.seed,
            "parent": parent,
        }
    )


def make_logger(cfg: RootConfig, stage_dir: Path):
    if cfg.logger.kind == "csv":
        return CSVLogger(save_dir=str(stage_dir), name="logs", version="")
    return False


def run_stage(cfg: RootConfig, stage: str, init_from: Path | None = None) -> dict:
    """Train one stage (or find it done) and return its export manifest."""
    stage_dir = Path(cfg.paths.output_dir) / stage
    export_dir = stage_dir / "encoder"
    parent = manifest_hash(read_export_manifest(init_from)) if init_from else None
    config_hash = stage_config_hash(cfg, stage, parent)
    if (export_dir / MANIFEST).is_file() and read_export_manifest(export_dir).get(
        "config_hash"
    ) == config_hash:
        log.info("%s: up to date in %s, skipped", stage, export_dir)
        return read_export_manifest(export_dir)

    encoder, tokenizer, _ = load_start(init_from, cfg.model)
    module, datamodule = STAGE_BUILDERS[stage](cfg, encoder, tokenizer)
    started = time.time()

    def manifest() -> dict:
        data_manifest = getattr(datamodule, "manifest", None)
        return {
            "stage": stage,
            "config_hash": config_hash,
            "config": {"stage": to_plain(getattr(cfg.stages, stage)), "seed": cfg.seed},
            "data_manifest_hash": stable_hash(data_manifest) if data_manifest else None,
            "data_counts": (data_manifest or {}).get("counts"),
            "parent": parent,
            "parent_path": str(init_from) if init_from else None,
            "seconds": round(time.time() - started, 2),
        }

    exporter = EncoderExportCallback(export_dir, tokenizer, manifest)
    checkpoints = ModelCheckpoint(dirpath=str(stage_dir / "checkpoints"), save_last=True, save_top_k=0)
    stage_cfg = getattr(cfg.stages, stage)
    trainer_kwargs = {k: v for k, v in asdict(cfg.trainer).items() if v is not None}
    trainer = pl.Trainer(
        **trainer_kwargs,
        max_epochs=stage_cfg.max_epochs,
        max_steps=stage_cfg.max_steps,
        default_root_dir=str(stage_dir),
        logger=make_logger(cfg, stage_dir),
        callbacks=[checkpoints, exporter],
        use_distributed_sampler=False,  # our batch sampler shards itself across ranks
    )
    last = stage_dir / "checkpoints" / "last.ckpt"
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    return read_export_manifest(export_dir)


def run_curriculum(cfg: RootConfig) -> dict[str, dict]:
    pl.seed_everything(cfg.seed, workers=True)
    results, parent_dir = {}, None
    for stage in cfg.curriculum.stages:
        results[stage] = run_stage(cfg, stage, init_from=parent_dir)
        parent_dir = Path(cfg.paths.output_dir) / stage / "encoder"
    return results
