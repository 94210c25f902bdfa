"""A W&B sweep YAML run here, offline: W&B's own `sweeps` library proposes the runs, one process each.

The YAML is the one `wandb sweep` takes (method, metric, parameters, and a `command` that runs
`cofee-finetune` and passes the parameters as Hydra overrides with `${args_no_hyphens}`). Before any
run, every parameter name and every value it can take is composed into the fine-tuning Hydra config
and type-checked, so a typo fails at once, named. Then, run after run: the library proposes (grid,
random or bayes, given the finished runs and their metric); the command runs as its own process with
`WANDB_MODE=offline` and, last on its command line (Hydra: the last override wins), the run's own
folder `paths.output_dir=sweeps/<name>/runs/<n>`; the metric is read from the `results.json` that
`cofee-finetune` writes there (cofee.pipeline.finetune.export_finetuned; nested keys as `a/b`, the
same names as in the W&B summary an online sweep reads), never from W&B's internal `.wandb` format;
and `sweeps/<name>/results.csv` is rewritten, sorted by the metric, so an interrupted sweep keeps its
rows and resumes where it stopped. A run that exits non-zero, writes no results.json, or reports no
finite value of the metric is a failed row with its reason.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cofee.utils.errors import CofeeError, InputFileError
from cofee.utils.io import atomic_write_json, atomic_write_text, read_json

# The cofee CLI a sweep drives: its console script, module and Hydra config name, and the validator
# of that config. Only cofee-finetune writes a results.json per run (cofee-pretrain and cofee-study
# do not), so it is the only target: pretraining is tuned through the exports it fine-tunes from.
TARGETS = {
    "finetune": ("cofee-finetune", "cofee.cli.finetune", "validate_finetune"),
}
OTHER_CLIS = ("cofee-pretrain", "cofee.cli.pretrain", "cofee-study", "cofee.cli.study")
RESULTS = "results.json"  # what cofee-finetune writes in its run folder (paths.output_dir)
ARG_MACROS = ("${args_no_hyphens}", "${args_override_hydra}", "${args_append_hydra}")
# Set per run by the controller (last override wins in Hydra), so not sweepable.
RESERVED = ("run_name", "paths.output_dir", "paths.root", "logger.group", "logger.mode")
ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")  # as the W&B agent fills it: the value, else the name
MAX_FAILED_IN_A_ROW = 3


class SweepError(CofeeError):
    def __init__(self, path: str | Path, message: str):
        self.path, self.message = str(path), message
        super().__init__(f"{path}: {message}")

    def __reduce__(self):
        return (type(self), (self.path, self.message))


def _sweeps():
    with warnings.catch_warnings():  # the library's pydantic config triggers a v2 rename warning
        warnings.simplefilter("ignore")
        import sweeps
        from sweeps.params import HyperParameter
    return sweeps, HyperParameter


@dataclass
class Sweep:
    path: Path
    name: str
    config: dict  # as `wandb sweep` reads it, defaults filled in by the library
    target: str  # finetune (the only CLI that writes a results.json)
    metric: str
    goal: str  # maximize | minimize
    params: list[str]
    fixed: list[str]  # literal Hydra overrides in `command`

    @property
    def maximize(self) -> bool:
        return self.goal == "maximize"


def _target_of(command: list[str], program: str | None, path) -> str:
    words = [str(w) for w in command] + ([program] if program else [])
    for name, (script, module, _) in TARGETS.items():
        for word in words:
            if Path(word).name == script or word == module or word.endswith(f"cli/{name}.py"):
                return name
    for word in words:
        if Path(word).name in OTHER_CLIS or word in OTHER_CLIS:
            raise SweepError(
                path,
                f"command runs {word}, which writes no {RESULTS} to read the metric from; "
                "cofee-sweep runs cofee-finetune only",
            )
    raise SweepError(path, f"command runs none of {', '.join(t[0] for t in TARGETS.values())}")


def load_sweep(path: str | Path, name: str | None = None) -> Sweep:
    """Read and check a sweep YAML (the library's schema, then ours); no config composed yet."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(path, "file not found") from None
    except yaml.YAMLError as exc:
        raise SweepError(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SweepError(path, "a sweep config is a mapping (method, metric, parameters, command)")
    sweeps, _ = _sweeps()
    problems = sweeps.schema_violations_from_proposed_config(raw)
    if problems:
        raise SweepError(path, "; ".join(problems))
    config = dict(sweeps.SweepConfig(raw))
    metric = config.get("metric") or {}
    if not metric.get("name"):
        raise SweepError(path, "metric: name the metric runs are compared on (e.g. dev_f1)")
    command = [str(word) for word in config.get("command") or []]
    if not any(macro in command for macro in ARG_MACROS):
        hint = " (Hydra rejects --key=value)" if "${args}" in command else ""
        raise SweepError(path, f"command must pass the parameters with ${{args_no_hyphens}}{hint}")
    for pname, spec in config["parameters"].items():
        if isinstance(spec, dict) and "parameters" in spec:
            raise SweepError(path, f"parameter '{pname}': use dotted names (a.b.c), not nested parameters")
        if pname.lstrip("+") in RESERVED:
            raise SweepError(path, f"parameter '{pname}' is set by cofee-sweep for each run")
    fixed = [w for w in command if "=" in w and not w.startswith(("-", "${"))]
    return Sweep(
        path=path,
        name=name or str(config.get("name") or path.stem),
        config=config,
        target=_target_of(command, config.get("program"), path),
        metric=metric["name"],
        goal=metric.get("goal", "maximize"),
        params=list(config["parameters"]),
        fixed=fixed,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _candidates(name: str, spec: dict) -> list:
    """The values a parameter can take: all of a list, else both ends and the middle of a range."""
    _, HyperParameter = _sweeps()
    param = HyperParameter(name, spec)
    if "values" in param.config:
        return list(param.config["values"])
    if "value" in param.config:
        return [param.config["value"]]
    out = []
    for x in (0.0, 0.5, 1.0):
        value = _plain(param.ppf(x))
        if isinstance(value, int | float) and math.isfinite(value) and value not in out:
            out.append(value)
    return out


def override(name: str, value: Any) -> str:
    """`name=value` exactly as the W&B agent writes `${args_no_hyphens}`."""
    return f"{name}={_plain(value)}"


def check_parameters(sweep: Sweep) -> None:
    """Compose the target's Hydra config with each value of each parameter and type-check it: an
    unknown name, a wrong type or an out-of-range value fails here, before any run, named."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cofee import config as config_module

    script, _, validator = TARGETS[sweep.target]
    validate = getattr(config_module, validator)
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        try:
            validate(compose(config_name=sweep.target, overrides=sweep.fixed))
        except (HydraException, OmegaConfBaseException, CofeeError) as exc:
            raise SweepError(sweep.path, f"command overrides: {str(exc).splitlines()[0]}") from None
        for name in sweep.params:
            spec = sweep.config["parameters"][name]
            for value in _candidates(name, spec):
                try:
                    validate(
                        compose(config_name=sweep.target, overrides=[*sweep.fixed, override(name, value)])
                    )
                except (HydraException, OmegaConfBaseException) as exc:
                    first = str(exc).splitlines()[0]
                    if "Could not override" in first or "not in struct" in first:
                        raise SweepError(
                            sweep.path, f"parameter '{name}' is not a key (or option) of the {script} config"
                        ) from None
                    raise SweepError(sweep.path, f"parameter '{name}' value {value!r}: {first}") from None
                except CofeeError as exc:
                    raise SweepError(sweep.path, f"parameter '{name}' value {value!r}: {exc}") from None
    sweeps, _ = _sweeps()
    try:  # the library's own objections (e.g. a continuous range in a grid) before any run, too
        sweeps.next_run(sweep.config, [])
    except (ValueError, TypeError) as exc:
        raise SweepError(sweep.path, str(exc).splitlines()[0]) from None


# -- runs ---------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    name: str
    params: dict
    state: str  # finished | failed
    metric: float | None
    seconds: float
    run_dir: str
    summary: dict = field(default_factory=dict)  # the numbers of its results.json, keys `a/b`
    reason: str = ""  # why it failed, in one line

    @classmethod
    def from_state(cls, fields_: dict) -> RunRecord:
        """A record saved in state.json (keys of older versions, e.g. `wandb_run`, are dropped)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in fields_.items() if k in known})


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def flatten(obj: dict, prefix: str = "") -> dict[str, Any]:
    """Nested keys as `a/b/c`: the names cofee-finetune gives the same figures in its W&B summary
    (cofee.pipeline.loggers.log_summary), so one sweep YAML names its metric the same online."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


class RunFailed(Exception):
    """Why a run reports no metric (one line)."""


def read_results(run_dir: Path, metric: str) -> tuple[dict, float]:
    """The numbers of a run's results.json, as `a/b` keys, and its finite value of `metric`; raises
    RunFailed, saying why, when the file is missing, unreadable or lacks the metric."""
    path = run_dir / RESULTS
    if not path.is_file():
        raise RunFailed(f"exited 0 but wrote no {RESULTS} in {run_dir}")
    try:
        results = read_json(path)
    except InputFileError as exc:
        raise RunFailed(str(exc)) from None
    if not isinstance(results, dict):
        raise RunFailed(f"{path}: not a JSON object")
    numbers = {
        k: v
        for k, v in flatten(results).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith("_")
    }
    if metric not in numbers:
        keys = ", ".join(sorted(numbers)) or "none"
        raise RunFailed(f"{path} has no number '{metric}' (its numbers: {keys})")
    value = _finite(numbers[metric])
    if value is None:
        raise RunFailed(f"{path}: '{metric}' is {numbers[metric]}, not a finite number")
    return numbers, value


def _last_error(log_file: Path) -> str:
    """The run's error, in one line: the last output line that names an error (a cofee CLI's
    `cofee-finetune: error: ...`, a traceback's last line), else its last line; shortened."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    last = (errors or lines or [""])[-1]
    return last if len(last) <= 200 else last[:197] + "..."


def command_line(sweep: Sweep, params: dict, extra: list[str]) -> list[str]:
    """The sweep's `command` with W&B's macros filled in as the agent does; `extra` (the controller's
    overrides) goes at the very end, so it wins over anything the command sets (Hydra: last wins)."""
    args = [override(k, v) for k, v in params.items()]
    macros = {
        "${env}": ["/usr/bin/env"] if os.name != "nt" else [],
        "${interpreter}": [sys.executable],
        "${program}": [str(sweep.config["program"])] if sweep.config.get("program") else [],
        "${args_no_hyphens}": args,
        "${args_override_hydra}": ["++" + a for a in args],
        "${args_append_hydra}": ["+" + a for a in args],
    }
    out = []
    for word in sweep.config["command"]:
        word = ENVVAR.sub(lambda m: os.environ.get(m.group(1), m.group(1)), str(word))
        out += macros.get(word, [word])
    return out + list(extra)


def run_overrides(sweep: Sweep, name: str, run_dir: Path) -> list[str]:
    """What the controller sets for each run: its name, its W&B group and its own run folder, where
    cofee-finetune writes results.json (and model/, wandb/)."""
    return [f"run_name={name}", f"paths.output_dir={run_dir}", f"logger.group={sweep.name}"]


def _child_env() -> dict:
    env = dict(os.environ)
    env["WANDB_MODE"] = "offline"  # wins over logger.mode=online (cofee.pipeline.loggers.effective_mode)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_one(
    sweep: Sweep, params: dict, index: int, sweep_dir: Path, timeout: float | None = None
) -> RunRecord:
    name = f"{sweep.name}-{index:03d}"
    run_dir = (sweep_dir / "runs" / f"{index:03d}").resolve()
    if run_dir.exists():  # a run cut short by an interrupt: start it again from nothing
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    cmd = command_line(sweep, params, run_overrides(sweep, name, run_dir))
    atomic_write_text(run_dir / "command.txt", " ".join(cmd) + "\n")
    started = time.time()
    timed_out = False
    with open(run_dir / "run.log", "w", encoding="utf-8") as out:
        try:
            code = subprocess.run(
                cmd, env=_child_env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code, timed_out = -1, True
            out.write(f"\ncofee-sweep: run stopped after {timeout} s\n")
    seconds = round(time.time() - started, 1)
    record = RunRecord(
        name=name,
        params={k: _plain(v) for k, v in params.items()},
        state="failed",
        metric=None,
        seconds=seconds,
        run_dir=str(run_dir),
    )
    if timed_out:
        record.reason = f"stopped after {timeout} s (--run-timeout)"
    elif code != 0:
        last = _last_error(run_dir / "run.log")
        record.reason = f"exit code {code}" + (f": {last}" if last else "")
    else:
        try:
            record.summary, record.metric = read_results(run_dir, sweep.metric)
            record.state = "finished"
        except RunFailed as exc:
            record.reason = str(exc)
    return record


def as_sweep_run(sweep: Sweep, record: RunRecord):
    sweeps, _ = _sweeps()
    has = record.metric is not None
    return sweeps.SweepRun(
        name=record.name,
        config={k: {"value": v} for k, v in record.params.items()},
        state=sweeps.RunState.finished if record.state == "finished" else sweeps.RunState.failed,
        summary_metrics={sweep.metric: record.metric} if has else {},
        history=[{sweep.metric: record.metric}] if has else [],
    )


# -- state and results table ---------------------------------------------------------------------------
def _identity(sweep: Sweep) -> dict:
    return {k: sweep.config.get(k) for k in ("method", "metric", "parameters", "command", "program")}


def load_records(sweep: Sweep, sweep_dir: Path) -> list[RunRecord]:
    state_file = sweep_dir / "state.json"
    if not state_file.is_file():
        return []
    state = read_json(state_file)
    if json.dumps(state.get("sweep"), sort_keys=True, default=str) != json.dumps(
        _identity(sweep), sort_keys=True, default=str
    ):
        raise SweepError(
            sweep_dir, f"holds runs of a different sweep than {sweep.path}; use --name or --fresh"
        )
    return [RunRecord.from_state(r) for r in state["runs"]]


def sorted_records(sweep: Sweep, records: list[RunRecord]) -> list[RunRecord]:
    sign = -1 if sweep.maximize else 1
    return sorted(records, key=lambda r: (r.metric is None, sign * (r.metric or 0.0), r.name))


def results_rows(sweep: Sweep, records: list[RunRecord]) -> tuple[list[str], list[list]]:
    header = ["run", "state", sweep.metric, *sweep.params, "seconds", "reason"]
    rows = [
        [
            r.name,
            r.state,
            r.metric if r.metric is not None else "",
            *(r.params.get(p, "") for p in sweep.params),
            r.seconds,
            r.reason,
        ]
        for r in sorted_records(sweep, records)
    ]
    return header, rows


def save(sweep: Sweep, sweep_dir: Path, records: list[RunRecord]) -> Path:
    atomic_write_json(
        sweep_dir / "state.json", {"sweep": _identity(sweep), "runs": [asdict(r) for r in records]}
    )
    header, rows = results_rows(sweep, records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "results.csv", buffer.getvalue())
    return sweep_dir / "results.csv"


def markdown_table(sweep: Sweep, records: list[RunRecord]) -> str:
    """The results as a Markdown table; the `reason` column only when a run failed."""
    header, rows = results_rows(sweep, records)
    if not any(r.reason for r in records):
        header, rows = header[:-1], [row[:-1] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"{v:.4f}" if i == 2 and isinstance(v, float) else str(v).replace("|", "\\|")
            for i, v in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_command(sweep: Sweep, records: list[RunRecord]) -> str | None:
    done = [r for r in sorted_records(sweep, records) if r.metric is not None]
    if not done:
        return None
    script = TARGETS[sweep.target][0]
    best = done[0]
    overrides = [*(w for w in sweep.fixed if w.split("=", 1)[0].lstrip("+") not in RESERVED)]
    overrides += [override(k, v) for k, v in best.params.items()]
    return f"{sweep.metric}={best.metric:.4f} ({best.name}): {script} {' '.join(overrides)}"


# -- the controller -----------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    sweep: Sweep
    sweep_dir: Path
    records: list[RunRecord]
    new_runs: int


def run_sweep(
    sweep: Sweep,
    count: int | None = None,
    out_root: str | Path = "sweeps",
    seed: int = 0,
    fresh: bool = False,
    timeout: float | None = None,
    echo=print,
) -> SweepOutcome:
    method = sweep.config["method"]
    if count is None and method != "grid":
        raise SweepError(sweep.path, f"method {method} never ends by itself: give a count (COUNT=n)")
    check_parameters(sweep)
    sweep_dir = Path(out_root) / sweep.name
    if fresh and sweep_dir.exists():
        shutil.rmtree(sweep_dir)
    records = load_records(sweep, sweep_dir)
    if records:
        echo(f"cofee-sweep: {sweep.name}: {len(records)} runs already done in {sweep_dir}, continuing")
    sweeps, _ = _sweeps()
    new = 0
    while count is None or new < count:
        index = len(records)
        random.seed(seed + index)  # the library draws from both global generators
        np.random.seed(seed + index)
        proposal = sweeps.next_run(sweep.config, [as_sweep_run(sweep, r) for r in records])
        if proposal is None:
            echo(f"cofee-sweep: {sweep.name}: the grid is done")
            break
        params = {k: _plain(v["value"]) for k, v in proposal.config.items()}
        echo(f"cofee-sweep: run {index:03d}: {' '.join(override(k, v) for k, v in params.items())}")
        record = run_one(sweep, params, index, sweep_dir, timeout)
        records.append(record)
        new += 1
        save(sweep, sweep_dir, records)
        shown = f"{record.metric:.4f}" if record.metric is not None else "missing"
        echo(f"cofee-sweep: run {index:03d}: {record.state}, {sweep.metric}={shown}, {record.seconds} s")
        if record.state == "failed":
            echo(f"cofee-sweep:   {record.reason}; see {record.run_dir}/run.log")
            if len(records) >= MAX_FAILED_IN_A_ROW and all(
                r.state == "failed" for r in records[-MAX_FAILED_IN_A_ROW:]
            ):
                echo(f"cofee-sweep: {MAX_FAILED_IN_A_ROW} runs in a row failed; stopping")
                break
    if records:
        save(sweep, sweep_dir, records)
    return SweepOutcome(sweep, sweep_dir, records, new)
