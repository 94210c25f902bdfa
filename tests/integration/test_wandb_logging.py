"""W&B logging, offline: one run per stage with the composed config, metrics, counts and the export as
a reference; the run id kept across a resume; no network asked for.

Runs are read back from their `.wandb` transaction logs by `read_offline_run` at the end of this file,
with wandb's own protobuf records. That is wandb's internal format, which can change between its
releases, so no cofee code reads it (cofee-sweep reads results.json); only these tests do, to check
what was logged. When a wandb upgrade changes the format, the reader here fails, naming the file and
the installed wandb version: update the reader, not the logging."""

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cofee.callbacks.wandb_run_id import read_run_id
from cofee.config import to_plain, validate, validate_finetune
from cofee.models.export import manifest_hash, read_export_manifest
from cofee.pipeline.curriculum import run_curriculum
from cofee.pipeline.loggers import effective_mode, flatten
from tests.support import write_dump


def _read(path, timeout: float = 30.0):
    return read_offline_run(path, wait=timeout)


def _compose(name, overrides):
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def _assert_holds_composed(logged: dict, composed) -> None:
    """Every leaf of the composed (resolved) config is in the logged config, with its value."""
    leaves = flatten(OmegaConf.to_container(composed, resolve=True))
    got = flatten(logged)
    assert {k: got.get(k, "<missing>") for k in leaves} == leaves


@pytest.fixture(scope="module")
def esi_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb_stage")
    dump = write_dump(root / "dump.xml")
    overrides = [
        "experiment=smoke",
        f"paths.root={root}",
        f"data.anchors.dump={dump}",
        "data.anchors.build_workers=1",
        "data.anchors.dev_fraction=0.2",
        "logger=wandb",
        "logger.tags=[test]",
        "trainer.log_every_n_steps=1",
    ]
    composed = _compose("pretrain", overrides)
    cfg = validate(composed)
    manifest = run_curriculum(cfg)["esi"]
    stage_dir = root / "outputs" / "smoke" / "esi"
    return SimpleNamespace(
        root=root, overrides=overrides, composed=composed, cfg=cfg, manifest=manifest, dir=stage_dir
    )


def test_stage_run_holds_the_composed_config_metrics_counts_and_export(esi_run):
    found = find_offline_runs(esi_run.dir)
    assert len(found) == 1 and found[0].is_relative_to(esi_run.dir / "wandb")
    run = _read(found[0])
    assert (run.group, run.job_type, run.name, run.tags, run.exit_code) == (
        "smoke",
        "esi",
        "smoke/esi",
        ["test"],
        0,
    )
    assert run.config == to_plain(esi_run.cfg)  # once, at init: no module hparams merged in
    _assert_holds_composed(run.config, esi_run.composed)

    steps = esi_run.manifest["global_step"]
    train = [row for row in run.history if "esi/train/loss" in row]
    assert [row["trainer/global_step"] for row in train] == list(range(steps))  # every step
    lrs = [row["esi/train/lr"] for row in train]
    assert len(set(lrs)) > 1 and max(lrs) == pytest.approx(esi_run.cfg.stages.esi.optim.lr)  # decay
    val = [row for row in run.history if "esi/val/f1" in row]
    assert len(val) == 1 and val[0]["epoch"] == 0  # per epoch
    assert val[0]["esi/val/f1"] == pytest.approx(esi_run.manifest["metrics"]["esi/val/f1"], abs=1e-6)

    export = esi_run.dir / "encoder"
    digest = manifest_hash(read_export_manifest(export))
    assert run.summary["encoder/manifest_hash"] == digest
    assert run.summary["encoder/path"] == str(export.resolve())
    assert run.summary["data_counts/anchors"] == esi_run.manifest["data_counts"]["anchors"] > 0
    (artifact,) = run.artifacts
    assert artifact["type"] == "encoder" and artifact["metadata"]["manifest_hash"] == digest
    assert artifact["files"] == []  # a reference, not a copy of the weights
    assert artifact["references"] and all(
        r.startswith(export.resolve().as_uri()) for r in artifact["references"]
    )

    assert read_run_id(esi_run.dir / "checkpoints" / "last.ckpt") == run.run_id
    assert wandb.run is None  # finished: the next stage cannot log into it


def test_resumed_stage_keeps_its_run_id(esi_run, monkeypatch):
    """A stage stopped mid-way (an error at step 3; last.ckpt every 2 steps) continues its W&B run."""
    from cofee.stages.esi import ESIModule

    cfg = validate(
        _compose(
            "pretrain", [*esi_run.overrides, "run_name=stopped", "curriculum.checkpoint_every_n_steps=2"]
        )
    )
    stage_dir = esi_run.root / "outputs" / "stopped" / "esi"
    training_step = ESIModule.training_step

    def preempted(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("preempted")
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(ESIModule, "training_step", preempted)
    with pytest.raises(RuntimeError, match="preempted"):
        run_curriculum(cfg)
    monkeypatch.undo()
    first = _read(find_offline_runs(stage_dir)[0])
    assert read_run_id(stage_dir / "checkpoints" / "last.ckpt") == first.run_id

    resumed = run_curriculum(cfg)["esi"]  # fit continues from last.ckpt
    assert resumed["global_step"] == esi_run.manifest["global_step"]
    found = find_offline_runs(stage_dir)
    assert len(found) == 2  # offline: a second folder with the same run id
    second = _read(found[1])
    assert second.run_id == first.run_id and second.job_type == "esi"
    steps = [row["trainer/global_step"] for row in second.history if "esi/train/loss" in row]
    assert steps[0] == 2  # it carries on from the step of last.ckpt
    assert read_run_id(stage_dir / "checkpoints" / "last.ckpt") == first.run_id


def test_csv_stays_the_pretraining_default_and_leaves_no_run_id(compose_cfg):
    cfg = validate(compose_cfg([]))
    assert cfg.logger.kind == "csv"
    assert read_run_id(None) is None


def test_environment_offline_wins_over_online(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert effective_mode("online") == "offline" and effective_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert effective_mode("online") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert effective_mode("online") == "online"


def test_unknown_logger_mode_is_a_named_config_error():
    from cofee.cli.entry import check_overrides
    from cofee.config import FinetuneRootConfig
    from cofee.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="logger.mode"):  # as cofee-finetune checks it, before Hydra
        check_overrides(["logger=wandb", "logger.mode=onlin"], FinetuneRootConfig)


FINETUNE_TINY = [
    "model=tiny",
    "fraction=0.02",
    "finetune.max_steps=8",
    "finetune.val_every_steps=4",
    "finetune.bootstrap_samples=50",
    "finetune.optim.lr=1e-3",
    "trainer.log_every_n_steps=1",
    "logger=wandb",
    "run_name=nonet",
]


def test_finetune_run_with_no_network_finishes_offline(tmp_path):
    """No API key, the W&B server and every proxy pointing at an address that never answers, and the
    config asking for online: WANDB_MODE=offline wins and the run ends without touching the network
    (any attempt would hang on the connect and its retries, past the timeout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    blackhole = "http://10.255.255.1:9"
    env.update(
        WANDB_MODE="offline",
        WANDB_BASE_URL=blackhole,
        HTTP_PROXY=blackhole,
        HTTPS_PROXY=blackhole,
        http_proxy=blackhole,
        https_proxy=blackhole,
        HF_HUB_OFFLINE="1",
    )
    overrides = [*FINETUNE_TINY, "logger.mode=online"]
    done = subprocess.run(
        [sys.executable, "-m", "cofee.cli.finetune", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "outputs" / "nonet"
    results = json.loads((out / "results.json").read_text())
    (log_file,) = find_offline_runs(out)
    run = _read(log_file)
    composed = _compose("finetune", overrides)
    assert run.config == to_plain(validate_finetune(composed))
    _assert_holds_composed(run.config, composed)
    assert (run.group, run.job_type, run.exit_code) == ("nonet", "finetune", 0)
    assert run.summary["dev_f1"] == pytest.approx(results["dev_f1"])
    assert run.summary["test/micro/f1"] == pytest.approx(results["test"]["micro"]["f1"])
    assert [r["trainer/global_step"] for r in run.history if "finetune/train/loss" in r] == list(range(8))
    assert len(run.metric("finetune/val/f1")) == 2
    (artifact,) = run.artifacts
    assert artifact["type"] == "model" and artifact["files"] == []


def test_cluster_refresh_logs_nmi_and_a_size_histogram(tmp_path):
    from cofee.config import LoggerConfig
    from cofee.pipeline.loggers import finish_logger, log_clusters, make_logger

    logger = make_logger(
        LoggerConfig(kind="wandb"), tmp_path, name="c", group="g", job_type="fet", config={"a": 1}
    )
    csv_logger = make_logger(LoggerConfig(kind="csv"), tmp_path, name="c", group="g", job_type="fet")
    trainer = SimpleNamespace(loggers=[logger, csv_logger], global_step=7)
    log_clusters(trainer, "fet", sizes=[5, 0, 12, 3], nmi=0.42)
    csv_logger.save()
    finish_logger(logger)
    (log_file,) = find_offline_runs(tmp_path)
    run = _read(log_file)
    assert run.config == {"a": 1} and run.job_type == "fet"
    assert run.metric("fet/cluster/nmi") == [pytest.approx(0.42)] and run.metric("fet/cluster/empty") == [1]
    (histogram,) = run.metric("fet/cluster/sizes")
    assert histogram["_type"] == "histogram" and sum(histogram["values"]) == 4
    assert "fet/cluster/nmi" in (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]


def test_disabled_mode_writes_no_run(tmp_path):
    from cofee.config import LoggerConfig
    from cofee.pipeline.loggers import finish_logger, log_export, log_summary, make_logger

    logger = make_logger(
        LoggerConfig(kind="wandb", mode="disabled"), tmp_path, name="d", group="g", job_type="esi"
    )
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "config.json").write_text("{}")
    log_summary(logger, {"a": {"b": 1}})
    log_export(
        logger, tmp_path / "export", "encoder", "d-esi-encoder", {"stage": "esi", "data_counts": {"n": 1}}
    )
    finish_logger(logger)
    assert find_offline_runs(tmp_path) == [] and wandb.run is None


def test_log_model_copies_the_export_into_the_artifact(tmp_path):
    from cofee.config import LoggerConfig
    from cofee.pipeline.loggers import finish_logger, log_export, make_logger

    cfg = LoggerConfig(kind="wandb", log_model=True)
    logger = make_logger(cfg, tmp_path, name="m", group="g", job_type="esi")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.safetensors").write_bytes(b"weights")
    log_export(logger, tmp_path / "export", "encoder", "m-esi-encoder", {"stage": "esi"}, copy=cfg.log_model)
    finish_logger(logger)
    (artifact,) = _read(find_offline_runs(tmp_path)[0]).artifacts
    assert artifact["files"] == ["model.safetensors"] and artifact["references"] == []


def test_hydra_multirun_jobs_are_each_their_own_run(tmp_path):
    overrides = [
        "model=tiny",
        "fraction=0.02",
        "finetune.max_steps=4",
        "finetune.val_every_steps=4",
        "finetune.bootstrap_samples=20",
        "trainer.log_every_n_steps=1",
        "logger=wandb",
        "run_name=multi",
        "finetune.optim.lr=1e-3,3e-3",
    ]
    # not the W&B variables of this process's own runs (e.g. its wandb service), which a child would use
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "cofee.cli.finetune", "-m", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = [_read(p) for p in find_offline_runs(tmp_path / "outputs" / "multi")]
    assert sorted(r.config["finetune"]["optim"]["lr"] for r in runs) == [1e-3, 3e-3]
    assert len({r.run_id for r in runs}) == 2
    for run in runs:  # two runs in one process: each holds its own steps only
        assert [r["trainer/global_step"] for r in run.history if "finetune/train/loss" in r] == [0, 1, 2, 3]


# -- reading an offline run back (wandb's internal format: tests only) --------------------------------
_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
_RECORD = struct.Struct("<IHB")  # crc32, length, type (leveldb log format)
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_UPDATE_THE_READER = f"(wandb {wandb.__version__} changed its .wandb format? update this test's reader)"


def _records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    ident, magic, version = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a W&B transaction log of version 0 {_UPDATE_THE_READER}")
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
            raise ValueError(f"{path}: bad checksum at byte {pos} {_UPDATE_THE_READER}")
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


def _item_value(item):
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
