"""Benchmark figures as ratios against a baseline measured in the same process (machines are noisy)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from cofee.utils.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"


def figure(
    name: str,
    value: float,
    unit: str,
    baseline: float,
    target: float,
    note: str = "",
    lower_is_better: bool = False,
) -> dict:
    """One figure: `ratio` = value / baseline, `met` when the ratio reaches `target` (at most `target`
    for a cost such as start-up time, `lower_is_better`)."""
    ratio = value / baseline if baseline else float("nan")
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": round(baseline, 4),
        "ratio": round(ratio, 4),
        "target": target,
        "met": bool(ratio <= target if lower_is_better else ratio >= target),
        **({"lower_is_better": True} if lower_is_better else {}),
        **({"note": note} if note else {}),
    }


def write_results(benchmark: str, figures: list[dict], **extra) -> Path:
    path = RESULTS / f"{benchmark}.json"
    atomic_write_json(
        path,
        {
            "benchmark": benchmark,
            "figures": figures,
            "machine": {
                "cpus": torch.get_num_threads(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "processor": platform.machine(),
            },
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        },
    )
    return path


def run_script(script: str, *args, what: str) -> dict:
    """Run `script` (Python source) in a fresh process, so its peak memory is its own; the JSON object
    it prints last. A failure is a RuntimeError naming `what`, with the end of its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{what} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
