"""W&B logging, offline: one run per stage with the composed config, metrics, counts and the export as
a reference; the run id kept across a resume; no network asked for. Runs are read back from their
`.wandb` transaction logs with wandb's own protobuf records (cofee.loggers.read_offline_run)."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import wandb
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cofee.callbacks.wandb_run_id import read_run_id
from cofee.config import to_plain, validate, validate_finetune
from cofee.export import manifest_hash, read_export_manifest
from cofee.loggers import effective_mode, find_offline_runs, flatten, read_offline_run
from cofee.pretrain import run_curriculum

from .conftest import write_dump


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
    from cofee.errors import ConfigError

    with pytest.raises(ConfigError, match="logger.mode"):
        validate_finetune(_compose("finetune", ["logger=wandb", "logger.mode=onlin"]))


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
    from cofee.loggers import finish_logger, log_clusters, make_logger

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
    from cofee.loggers import finish_logger, log_export, log_summary, make_logger

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
    from cofee.loggers import finish_logger, log_export, make_logger

    cfg = LoggerConfig(kind="wandb", log_model=True)
    logger = make_logger(cfg, tmp_path, name="m", group="g", job_type="esi")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.safetensors").write_bytes(b"weights")
    log_export(logger, tmp_path / "export", "encoder", "m-esi-encoder", {"stage": "esi"}, copy=cfg.log_model)
    finish_logger(logger)
    (artifact,) = _read(find_offline_runs(tmp_path)[0]).artifacts
    assert artifact["files"] == ["model.safetensors"] and artifact["references"] == []
