"""Sweeps offline: the W&B sweep YAML run by cofee-sweep with W&B's `sweeps` library. Each run's metric
comes from the results.json cofee-finetune writes in the run folder the controller gives it."""

import csv
import dataclasses
import itertools
import json
import math
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cofee.experiments import sweep as sweep_module
from cofee.experiments.sweep import (
    RunRecord,
    SweepError,
    check_parameters,
    command_line,
    load_sweep,
    read_results,
    run_one,
    run_sweep,
)
from tests.support import run_cli

CONF = Path(__file__).resolve().parents[2] / "conf" / "sweep"
TINY = CONF / "finetune_tiny.yaml"


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_grid_sweep_over_tiny_finetuning_finishes_four_runs(tmp_path):
    done = run_cli("sweep", TINY, "--out", tmp_path / "sweeps", cwd=tmp_path, timeout=500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = _read_csv(tmp_path / "sweeps" / "finetune_tiny" / "results.csv")
    assert len(rows) == 4 and all(r["state"] == "finished" for r in rows)
    grid = {(lr, f) for lr, f in itertools.product([1e-3, 3e-3], [0.02, 0.05])}
    assert {(float(r["finetune.optim.lr"]), float(r["fraction"])) for r in rows} == grid
    metrics = [float(r["dev_f1"]) for r in rows]
    assert metrics == sorted(metrics, reverse=True)  # sorted by the sweep's metric
    for row in rows:
        run_dir = (tmp_path / "sweeps" / "finetune_tiny" / "runs" / row["run"].rsplit("-", 1)[1]).resolve()
        # the metric came from the results.json cofee-finetune wrote in the run folder it was given
        results = json.loads((run_dir / "results.json").read_text())
        assert float(row["dev_f1"]) == pytest.approx(results["dev_f1"]) and row["reason"] == ""
        assert results["run_name"] == row["run"] and results["fraction"] == float(row["fraction"])
        composed = OmegaConf.load(run_dir / ".hydra" / "config.yaml")  # what the run was composed with
        assert composed.paths.output_dir == str(run_dir) and composed.run_name == row["run"]
        assert composed.finetune.optim.lr == float(row["finetune.optim.lr"])
        assert composed.model.name_or_path is None and composed.logger.group == "finetune_tiny"
        assert composed.logger.mode == "online"  # the environment made it offline: a local W&B run
        assert len(list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
        command = (run_dir / "command.txt").read_text().split()
        assert command[-3:] == [
            f"run_name={row['run']}",
            f"paths.output_dir={run_dir}",
            "logger.group=finetune_tiny",
        ]
    assert "| run | state | dev_f1 | finetune.optim.lr | fraction | seconds |" in done.stdout
    assert "best dev_f1=" in done.stdout and "finetune.optim.lr=" in done.stdout.split("best dev_f1=")[1]


def test_unknown_parameter_fails_before_any_run_naming_it(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["parameters"]["finetune.optim.lrr"] = config["parameters"].pop("finetune.optim.lr")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    done = run_cli("sweep", bad, "--out", tmp_path / "sweeps", cwd=tmp_path, timeout=120)
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
        (
            {"command": ["${env}", "${interpreter}", "-m", "cofee.cli.pretrain", "${args_no_hyphens}"]},
            "writes no results.json",
        ),
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
    assert cmd[-3:] == ["finetune.optim.lr=0.001", "fraction=0.05", "run_name=x"]  # the controller's last
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


# A stand-in for cofee-finetune, run as the sweep's command: it writes what `mode=` asks for into the
# last `paths.output_dir=` of its command line (as Hydra would) and exits with `code=`.
FAKE_FINETUNE = """
import json, math, pathlib, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
out = pathlib.Path(args["paths.output_dir"])
mode = args.get("mode", "ok")
results = {"run_name": args.get("run_name"), "dev_f1": 0.25, "test": {"micro": {"f1": 0.2}}, "stages": []}
if mode == "ok":
    (out / "results.json").write_text(json.dumps(results))
elif mode == "no_metric":
    results.pop("dev_f1")
    (out / "results.json").write_text(json.dumps(results))
elif mode == "nan":
    (out / "results.json").write_text(json.dumps({**results, "dev_f1": math.nan}))
elif mode == "broken":
    (out / "results.json").write_text('{"dev_f1": 0.2')
elif mode == "sleep":
    time.sleep(30)
if mode == "error":
    print("some progress")
    print("cofee-finetune: error: data.split_dir: no such folder", file=sys.stderr)
    sys.exit(2)
"""


def _fake_sweep(tmp_path, **extra_config):
    script = tmp_path / "fake_finetune.py"
    script.write_text(FAKE_FINETUNE)
    sweep = load_sweep(TINY)
    command = ["${env}", "${interpreter}", str(script), "${args_no_hyphens}", "paths.output_dir=elsewhere"]
    config = {**sweep.config, "command": command, **extra_config}
    return dataclasses.replace(sweep, config=config)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error", "exit code 2: cofee-finetune: error: data.split_dir: no such folder"),
        ("none", "exited 0 but wrote no results.json in "),
        ("no_metric", "results.json has no number 'dev_f1' (its numbers: test/micro/f1)"),
        ("nan", "results.json: 'dev_f1' is nan, not a finite number"),
        ("broken", "results.json:1: not valid JSON"),
    ],
)
def test_a_run_without_a_readable_metric_is_failed_with_its_reason(tmp_path, mode, reason):
    record = run_one(_fake_sweep(tmp_path), {"mode": mode}, 0, tmp_path / "sweeps")
    assert (record.state, record.metric) == ("failed", None)
    assert reason in record.reason and "\n" not in record.reason


def test_a_run_reads_the_results_json_of_the_folder_the_controller_gives_it(tmp_path):
    from cofee.pipeline.loggers import flatten

    record = run_one(_fake_sweep(tmp_path), {"mode": "ok"}, 4, tmp_path / "sweeps")
    run_dir = (tmp_path / "sweeps" / "runs" / "004").resolve()
    assert record.run_dir == str(run_dir) and not (tmp_path / "elsewhere").exists()  # the controller's wins
    assert (record.state, record.metric, record.reason) == ("finished", 0.25, "")
    assert record.summary == {"dev_f1": 0.25, "test/micro/f1": 0.2}  # numbers only, as `a/b` keys
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run_name"] == "finetune_tiny-004"
    # the same key names as the W&B summary cofee-finetune logs, so a sweep YAML works online too
    assert sweep_module.flatten(results) == flatten(results)
    assert read_results(run_dir, "test/micro/f1")[1] == 0.2


def test_a_run_past_its_timeout_is_failed_with_its_reason(tmp_path):
    record = run_one(_fake_sweep(tmp_path), {"mode": "sleep"}, 0, tmp_path / "sweeps", timeout=3)
    assert record.state == "failed" and record.reason == "stopped after 3 s (--run-timeout)"
    assert "run stopped after 3 s" in (Path(record.run_dir) / "run.log").read_text()


def test_failed_runs_keep_their_reasons_in_the_results_and_the_state(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "check_parameters", lambda sweep: None)  # `mode` is the fake's own
    lines = []
    sweep = _fake_sweep(tmp_path, parameters={"mode": {"values": ["ok", "error", "no_metric"]}})
    sweep = dataclasses.replace(sweep, params=["mode"])
    run_sweep(sweep, out_root=tmp_path, echo=lines.append)
    rows = _read_csv(tmp_path / "finetune_tiny" / "results.csv")
    assert [(r["mode"], r["state"], r["dev_f1"]) for r in rows] == [
        ("ok", "finished", "0.25"),
        ("error", "failed", ""),
        ("no_metric", "failed", ""),
    ]
    assert rows[0]["reason"] == "" and rows[1]["reason"].startswith("exit code 2: cofee-finetune: error:")
    assert any("cofee-sweep:   exit code 2: cofee-finetune: error:" in line for line in lines)
    state = json.loads((tmp_path / "finetune_tiny" / "state.json").read_text())
    reasons = [r["reason"] for r in state["runs"]]
    assert reasons[0] == "" and reasons[1].startswith("exit code 2") and "no number 'dev_f1'" in reasons[2]
    table = sweep_module.markdown_table(sweep, sweep_module.load_records(sweep, tmp_path / "finetune_tiny"))
    assert table.splitlines()[0] == "| run | state | dev_f1 | mode | seconds | reason |"


def test_a_state_file_of_the_wandb_reading_controller_still_resumes(tmp_path, monkeypatch):
    """state.json written before runs were read from results.json holds `wandb_run` and no `reason`."""
    calls = []
    _fake_runs(monkeypatch, calls)
    sweep = load_sweep(TINY)
    run_sweep(sweep, count=2, out_root=tmp_path, echo=lambda _: None)
    state_file = tmp_path / "finetune_tiny" / "state.json"
    state = json.loads(state_file.read_text())
    for run in state["runs"]:
        run.pop("reason")
        run["wandb_run"] = "abc123"
    state_file.write_text(json.dumps(state))
    outcome = run_sweep(sweep, out_root=tmp_path, echo=lambda _: None)
    assert outcome.new_runs == 2 and len(outcome.records) == 4
