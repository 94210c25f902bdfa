"""Loggers for stages and fine-tuning: CSV, none, or Weights & Biases (offline unless asked).

W&B: one run per stage (or fine-tune), grouped by the curriculum run (`group`), `job_type` = the
stage; the full resolved config is logged once, at `wandb.init`, and Lightning's own hyper-parameter
call is ignored (hyper-parameters come from the composed config, never from `wandb.config`). Runs are
offline unless `logger.mode=online` (and an API key); `WANDB_MODE=offline` or `disabled` in the
environment wins over `online`, so tests and `make` targets never reach the network.

Nothing here reads a run back: a `.wandb` file is wandb's internal format, which changes between its
releases. What a run reports is also in the files the run writes itself (`results.json` of
`cofee-finetune`, which `cofee-sweep` reads).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.logger import DummyExperiment

from cofee.callbacks.wandb_run_id import run_id  # noqa: F401  (its home is the callback that stores it)

log = logging.getLogger(__name__)


def effective_mode(mode: str) -> str:
    """The W&B mode a run uses: the configured one, unless the environment forbids the network."""
    forced = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "online" and forced in ("offline", "dryrun", "disabled"):
        return "offline" if forced == "dryrun" else forced
    return mode


class CofeeWandbLogger(WandbLogger):
    """A `WandbLogger` whose config is the one given at init: Lightning's `log_hyperparams` (the
    module's hparams) would add keys that are not in the composed config, so it is ignored."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)  # deprecated in wandb, warns even when None

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        return None


def make_logger(
    cfg,
    save_dir: str | Path,
    *,
    name: str,
    group: str,
    job_type: str,
    config: dict | None = None,
    resume_id: str | None = None,
) -> Logger | bool:
    """The Lightning logger of one stage or fine-tune run (`False` when `kind` is none).

    `cfg` is a `LoggerConfig`; `group` applies unless `cfg.group` is set; `resume_id` (read from the
    stage's `last.ckpt`) makes W&B continue that run online; offline, wandb writes a second folder
    with the same id (offline runs are not resumed into one; docs/design.md, "Weights & Biases")."""
    save_dir = Path(save_dir)
    if cfg.kind == "csv":
        return CSVLogger(save_dir=str(save_dir), name="logs", version="")
    if cfg.kind == "none":
        return False
    if cfg.kind != "wandb":
        raise ValueError(f"unknown logger kind {cfg.kind!r}")
    wandb_dir = Path(cfg.save_dir) if cfg.save_dir else save_dir
    wandb_dir.mkdir(parents=True, exist_ok=True)
    # never log into a run left open by an earlier stage (docs/design.md, "Weights & Biases")
    finish_wandb()
    return CofeeWandbLogger(
        name=name,
        save_dir=str(wandb_dir),
        id=resume_id,
        project=cfg.project,
        entity=cfg.entity,
        group=cfg.group or group,
        job_type=job_type,
        tags=list(cfg.tags) or None,
        mode=effective_mode(cfg.mode),
        config=config,
        log_model=False,  # the export is logged as a reference by log_export, not as checkpoints
    )


def wandb_run(logger) -> Any | None:
    """The live W&B run behind a logger (or a list of loggers), on rank zero only; else None."""
    loggers = logger if isinstance(logger, list | tuple) else [logger]
    for item in loggers:
        if isinstance(item, WandbLogger):
            run = item.experiment
            return None if isinstance(run, DummyExperiment) else run  # a dummy on other ranks
    return None


def finish_wandb(exit_code: int = 0) -> None:
    """End the active W&B run, if any (its files are complete when this returns)."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def finish_logger(logger, failed: bool = False) -> None:
    if isinstance(logger, WandbLogger):
        finish_wandb(exit_code=1 if failed else 0)


def flatten(obj: Mapping, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested dicts as one level of `a/b/c` keys (lists are kept as values)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def log_summary(logger, values: Mapping[str, Any]) -> None:
    """Set W&B summary values (nested dicts are flattened to `a/b` keys); no-op for other loggers."""
    run = wandb_run(logger)
    if run is None:
        return
    for key, value in flatten(values).items():
        run.summary[key] = value


def _artifact_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "export"


def log_export(logger, folder: str | Path, kind: str, name: str, manifest: Mapping | None = None, copy=False):
    """Record an exported folder as a W&B artifact: a reference to its path plus its manifest hash
    (no copy of the weights) unless `copy`; its counts (`*counts` manifest keys) go to the summary."""
    run = wandb_run(logger)
    if run is None:
        return None
    import wandb

    from cofee.models.export import manifest_hash

    folder = Path(folder).resolve()
    digest = manifest_hash(dict(manifest)) if manifest else None
    metadata = {"path": str(folder), "manifest_hash": digest}
    counts = {k: v for k, v in (manifest or {}).items() if k.endswith("counts") and isinstance(v, Mapping)}
    for key, value in counts.items():
        metadata[key] = dict(value)
    artifact = wandb.Artifact(_artifact_name(name), type=kind, metadata=metadata)
    if copy:
        artifact.add_dir(str(folder))
    else:
        artifact.add_reference(folder.as_uri(), checksum=False)
    run.log_artifact(artifact)
    log_summary(logger, {f"{kind}/path": str(folder), f"{kind}/manifest_hash": digest, **counts})
    return artifact


def log_clusters(trainer: pl.Trainer, stage: str, sizes, nmi: float | None = None, **scalars) -> None:
    """One cluster refresh: NMI (when gold types are known) and cluster sizes; W&B also gets the sizes
    as a histogram. Call it from the stage that clusters (rank zero logs)."""
    import numpy as np

    sizes = np.asarray(sizes)
    values = {
        f"{stage}/cluster/k": float(sizes.size),
        f"{stage}/cluster/empty": float((sizes == 0).sum()),
        f"{stage}/cluster/largest_share": float(sizes.max() / max(1, sizes.sum())) if sizes.size else 0.0,
        **{f"{stage}/cluster/{k}": float(v) for k, v in scalars.items()},
    }
    if nmi is not None:
        values[f"{stage}/cluster/nmi"] = float(nmi)
    for logger in trainer.loggers:
        if wandb_run(logger) is not None:
            import wandb

            bins = min(64, max(1, sizes.size))
            histogram = wandb.Histogram(sizes.tolist(), num_bins=bins)
            logger.log_metrics({**values, f"{stage}/cluster/sizes": histogram}, step=trainer.global_step)
        else:
            logger.log_metrics(values, step=trainer.global_step)
