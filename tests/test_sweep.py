"""Sweeps offline: the W&B sweep YAML run by cofee-sweep with W&B's `sweeps` library, and Hydra -m."""

import csv
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cofee import sweep as sweep_module
from cofee.loggers import find_offline_runs, read_offline_run
from cofee.sweep import RunRecord, SweepError, check_parameters, command_line, load_sweep, run_sweep

CONF = Path(__file__).resolve().parents[1] / "conf" / "sweep"
TINY = CONF / "finetune_tiny.yaml"


def _env():
    return {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_grid_sweep_over_tiny_finetuning_finishes_four_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cofee.cli.sweep", str(TINY), "--out", str(tmp_path / "sweeps")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = _read_csv(tmp_path / "sweeps" / "finetune_tiny" / "results.csv")
    assert len(rows) == 4 and all(r["state"] == "finished" for r in rows)
    grid = {(lr, f) for lr, f in itertools.product([1e-3, 3e-3], [0.02, 0.05])}
    assert {(float(r["finetune.optim.lr"]), float(r["fraction"])) for r in rows} == grid
    metrics = [float(r["dev_f1"]) for r in rows]
    assert metrics == sorted(metrics, reverse=True)  # sorted by the sweep's metric
    for row in rows:
        run_dir = tmp_path / "sweeps" / "finetune_tiny" / "runs" / row["run"].rsplit("-", 1)[1]
        results = json.loads((run_dir / "results.json").read_text())
        (log_file,) = find_offline_runs(run_dir)
        run = read_offline_run(log_file, wait=30.0)
        # the metric came back through the W&B summary, as an online sweep reads it
        assert (
            float(row["dev_f1"]) == pytest.approx(results["dev_f1"]) == pytest.approx(run.summary["dev_f1"])
        )
        assert run.config["finetune"]["optim"]["lr"] == float(row["finetune.optim.lr"])
        assert (
            run.config["fraction"] == float(row["fraction"]) and run.config["model"]["name_or_path"] is None
        )
        assert (
            run.group == "finetune_tiny" and run.config["logger"]["mode"] == "online"
        )  # env made it offline
    assert "| run | state | dev_f1 | finetune.optim.lr | fraction | seconds |" in done.stdout
    assert "best dev_f1=" in done.stdout and "finetune.optim.lr=" in done.stdout.split("best dev_f1=")[1]


def test_unknown_parameter_fails_before_any_run_naming_it(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["parameters"]["finetune.optim.lrr"] = config["parameters"].pop("finetune.optim.lr")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "cofee.cli.sweep", str(bad), "--out", str(tmp_path / "sweeps")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "'finetune.optim.lrr'" in done.stderr, done.stderr
    assert not (tmp_path / "sweeps").exists()  # nothing ran


@pytest.mark.parametrize(
    "change, message",
    [
        ({"parameters": {"fraction": {"values": [0.02, 2]}}}, "parameter 'fraction' value 2"),
        ({"parameters": {"model": {"values": ["tiny", "huge"]}}}, "parameter 'model' value 'huge'"),
        ({"parameters": {"run_name": {"values": ["a"]}}}, "set by cofee-sweep"),
        ({"parameters": {"fraction": {"min": 0.01, "max": 0.1}}}, "grid search"),
        ({"metric": None}, "metric"),
        ({"method": "grd"}, "grd"),
        ({"command": ["${env}", "${interpreter}", "-m", "cofee.cli.finetune", "${args}"]}, "Hydra rejects"),
        ({"command": ["${env}", "python", "train.py", "${args_no_hyphens}"]}, "runs none of"),
    ],
)
def test_bad_sweeps_are_named_errors(tmp_path, change, message):
    config = yaml.safe_load(TINY.read_text())
    for key, value in change.items():
        if key == "parameters":
            config["parameters"].update(value)
        elif value is None:
            config.pop(key)
        else:
            config[key] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SweepError, match="s.yaml") as err:
        check_parameters(load_sweep(path))
    assert message in str(err.value)


def test_command_is_filled_in_as_the_wandb_agent_does():
    sweep = load_sweep(TINY)
    cmd = command_line(sweep, {"finetune.optim.lr": 0.001, "fraction": 0.05}, ["run_name=x"])
    assert cmd[:4] == ["/usr/bin/env", sys.executable, "-m", "cofee.cli.finetune"]
    assert cmd[-3:] == ["finetune.optim.lr=0.001", "fraction=0.05", "run_name=x"]
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    agent = create_sweep_command_args(
        {"args": {"finetune.optim.lr": {"value": 0.001}, "fraction": {"value": 0.05}}}
    )
    assert agent["args_no_hyphens"] == cmd[-3:-1]


def _fake_runs(monkeypatch, calls):
    """Runs without processes: the metric is a smooth function of the parameters."""

    def fake(sweep, params, index, sweep_dir, timeout=None):
        calls.append(params)
        lr = params["finetune.optim.lr"]
        metric = 0.5 - (math.log10(lr) + 4.0) ** 2 / 10 + params.get("finetune.batch_size", 16) / 1000
        return RunRecord(f"{sweep.name}-{index:03d}", dict(params), "finished", metric, 0.0, str(sweep_dir))

    monkeypatch.setattr(sweep_module, "run_one", fake)


@pytest.mark.parametrize("method", ["grid", "random", "bayes"])
def test_every_method_proposes_offline(tmp_path, monkeypatch, method):
    config = {
        "name": f"m_{method}",
        "method": method,
        "metric": {"name": "dev_f1", "goal": "maximize"},
        "parameters": {
            "finetune.optim.lr": {"values": [1e-5, 1e-4, 1e-3]}
            if method == "grid"
            else {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-2},
            "finetune.batch_size": {"values": [16, 32]},
        },
        "command": [
            "${env}",
            "${interpreter}",
            "-m",
            "cofee.cli.finetune",
            "model=tiny",
            "${args_no_hyphens}",
        ],
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    calls = []
    _fake_runs(monkeypatch, calls)
    outcome = run_sweep(
        load_sweep(path), count=None if method == "grid" else 5, out_root=tmp_path, echo=lambda _: None
    )
    assert len(outcome.records) == (6 if method == "grid" else 5)
    assert len({tuple(sorted(c.items())) for c in calls}) == len(calls)  # no run proposed twice
    assert all(1e-6 <= c["finetune.optim.lr"] <= 1e-2 and c["finetune.batch_size"] in (16, 32) for c in calls)
    rows = _read_csv(tmp_path / f"m_{method}" / "results.csv")
    assert len(rows) == len(calls)
    assert [float(r["dev_f1"]) for r in rows] == sorted((float(r["dev_f1"]) for r in rows), reverse=True)
    if method != "grid":  # seeded: the same proposals again
        again = []
        _fake_runs(monkeypatch, again)
        run_sweep(load_sweep(path), count=5, out_root=tmp_path / "again", echo=lambda _: None)
        assert again == calls


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path, monkeypatch):
    calls = []
    _fake_runs(monkeypatch, calls)
    sweep = load_sweep(TINY)
    run_sweep(sweep, count=3, out_root=tmp_path, echo=lambda _: None)
    assert len(_read_csv(tmp_path / "finetune_tiny" / "results.csv")) == 3
    outcome = run_sweep(sweep, out_root=tmp_path, echo=lambda _: None)  # the rest of the grid only
    assert outcome.new_runs == 1 and len(calls) == 4
    assert len({tuple(sorted(c.items())) for c in calls}) == 4
    config = yaml.safe_load(TINY.read_text())
    config["parameters"]["fraction"]["values"] = [0.1]
    other = tmp_path / "finetune_tiny.yaml"
    other.write_text(yaml.safe_dump(config))
    with pytest.raises(SweepError, match="different sweep"):
        run_sweep(load_sweep(other), out_root=tmp_path, echo=lambda _: None)


def test_failed_runs_are_rows_and_three_in_a_row_stop_the_sweep(tmp_path, monkeypatch):
    def failing(sweep, params, index, sweep_dir, timeout=None):
        return RunRecord(f"{sweep.name}-{index:03d}", dict(params), "failed", None, 0.0, str(sweep_dir))

    monkeypatch.setattr(sweep_module, "run_one", failing)
    outcome = run_sweep(load_sweep(TINY), out_root=tmp_path, echo=lambda _: None)
    assert len(outcome.records) == 3 and all(r.state == "failed" for r in outcome.records)
    assert [r["dev_f1"] for r in _read_csv(tmp_path / "finetune_tiny" / "results.csv")] == ["", "", ""]


def test_hydra_multirun_still_works_and_each_job_is_its_own_run(tmp_path):
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
    done = subprocess.run(
        [sys.executable, "-m", "cofee.cli.finetune", "-m", *overrides],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = [read_offline_run(p, wait=30.0) for p in find_offline_runs(tmp_path / "outputs" / "multi")]
    assert sorted(r.config["finetune"]["optim"]["lr"] for r in runs) == [1e-3, 3e-3]
    assert len({r.run_id for r in runs}) == 2
    for run in runs:  # two runs in one process: each holds its own steps only
        assert [r["trainer/global_step"] for r in run.history if "finetune/train/loss" in r] == [0, 1, 2, 3]
