"""Loggers for stages and fine-tuning: CSV, none, or Weights & Biases (offline unless asked).

W&B: one run per stage (or fine-tune), grouped by the curriculum run (`group`), `job_type` = the
stage; the full resolved config is logged once, at `wandb.init`, and Lightning's own hyper-parameter
call is ignored (hyper-parameters come from the composed config, never from `wandb.config`). Runs are
offline unless `logger.mode=online` (and an API key); `WANDB_MODE=offline` or `disabled` in the
environment wins over `online`, so tests and `make` targets never reach the network.

`read_offline_run` reads a run's `.wandb` transaction log back with wandb's own protobuf records (the
installed wandb has no Python reader of its own): config, history, summary, artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.logger import DummyExperiment

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
    with the same id (offline runs are not resumed into one, PITFALLS.md)."""
    save_dir = Path(save_dir)
    if cfg.kind == "csv":
        return CSVLogger(save_dir=str(save_dir), name="logs", version="")
    if cfg.kind == "none":
        return False
    if cfg.kind != "wandb":
        raise ValueError(f"unknown logger kind {cfg.kind!r}")
    wandb_dir = Path(cfg.save_dir) if cfg.save_dir else save_dir
    wandb_dir.mkdir(parents=True, exist_ok=True)
    finish_wandb()  # never log into a run left open by an earlier stage (PITFALLS.md)
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


def run_id(logger) -> str | None:
    loggers = logger if isinstance(logger, list | tuple) else [logger]
    for item in loggers:
        if isinstance(item, WandbLogger):
            return item.version
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

    from .export import manifest_hash

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


class LogExportCallback(pl.Callback):
    """After the stage's exporter ran (it must come before this in the callbacks list): the export's
    counts go to the W&B summary and the export is recorded as an artifact reference."""

    def __init__(self, exporter, name: str, copy: bool = False):
        self.exporter = exporter
        self.name = name
        self.copy = copy

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        exported = getattr(self.exporter, "exported", None)
        if exported is not None and trainer.is_global_zero:
            log_export(trainer.loggers, self.exporter.out_dir, "encoder", self.name, exported, self.copy)


# -- reading an offline run back ---------------------------------------------------------------------
_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
_RECORD = struct.Struct("<IHB")  # crc32, length, type (leveldb log format)
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    ident, magic, version = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a W&B transaction log (version 0)")
    pos, pending = _HEADER.size, b""
    while pos + _RECORD.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:  # block trailer: zero padding
            pos += left
            continue
        crc, length, kind = _RECORD.unpack_from(data, pos)
        if crc == length == kind == 0:
            pos += left  # zero-filled rest of a block
            continue
        chunk = data[pos + _RECORD.size : pos + _RECORD.size + length]
        if len(chunk) < length:
            break  # a log still being written: stop at its last whole record
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += _RECORD.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _item_value(item) -> Any:
    which = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if which is None:
        return json.loads(item.value_json) if item.value_json else None
    if which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    return getattr(item, which)


def _put(target: dict, item, value) -> None:
    """A value under its key, or under its nested key path (media such as histograms are nested)."""
    if not item.nested_key:
        target[item.key] = value
        return
    *parents, last = item.nested_key
    for name in parents:
        target = target.setdefault(name, {})
    target[last] = value


def _pop(target: dict, item) -> None:
    *parents, last = item.nested_key or [item.key]
    for name in parents:
        target = target.get(name, {})
    target.pop(last, None)


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    resumed: bool = False
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)
    exit_code: int | None = None

    def metric(self, key: str) -> list:
        return [row[key] for row in self.history if key in row]


def find_offline_runs(folder: str | Path) -> list[Path]:
    """Every `.wandb` log under a folder, oldest first."""
    return sorted(Path(folder).rglob("run-*.wandb"), key=lambda p: (p.stat().st_mtime, str(p)))


def read_offline_run(path: str | Path, wait: float = 0.0) -> OfflineRun:
    """A run's config, history, summary and artifacts from its `.wandb` file (or its run folder).
    `wait` > 0: wait up to that many seconds for the run's exit record, since wandb's service may
    still be writing the file after `wandb.finish` (or the process) has returned."""
    import time

    deadline = time.monotonic() + wait
    while True:
        run = _read_offline_run(path)
        if run.exit_code is not None or time.monotonic() >= deadline:
            return run
        time.sleep(0.2)


def _read_offline_run(path: str | Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.wandb"))
        if not found:
            raise FileNotFoundError(f"{path}: no .wandb file")
        path = found[0]
    run = OfflineRun(path=path)
    for raw in _records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group = r.run_id, r.project, r.run_group
            run.job_type, run.name, run.tags = r.job_type, r.display_name, list(r.tags)
            run.resumed = r.resumed
            for item in r.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[item.key] = json.loads(item.value_json)
            for item in record.config.remove:
                run.config.pop(item.key, None)
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:
                _put(row, item, _item_value(item))
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _put(run.summary, item, json.loads(item.value_json))
            for item in record.summary.remove:
                _pop(run.summary, item)
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                    "references": [e.ref for e in a.manifest.contents if e.ref],
                    "files": [e.path for e in a.manifest.contents if not e.ref],
                }
            )
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run
