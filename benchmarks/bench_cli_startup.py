"""How fast a command reports a config mistake: a misspelt key and a wrong value, per console script.

Each figure is the median wall time of `python -m cofee.cli.<command> <mistake>` over `ROUNDS` runs,
against `python -c "import hydra"` timed in the same rounds (alternating order), so the ratio says
what the command adds to Hydra's own start-up. Target: at most 1.5x for every command, which holds only
while no command imports torch, Lightning, transformers or FAISS before its config is valid.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from benchmarks.common import figure, write_results

COMMANDS = ["build_anchors", "build_gazetteer", "pretrain", "finetune", "study", "denoising"]
MISTAKES = {"misspelt_key": "data.no_such_key=1", "wrong_value": "seed=not-a-number"}
ROUNDS = 5
TARGET = 1.5


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        raise RuntimeError(f"{' '.join(argv)} accepted a config mistake")
    return seconds


def run() -> dict:
    baseline_argv = [sys.executable, "-c", "import hydra"]
    rows: dict[str, dict[str, float]] = {}
    baseline_times: list[float] = []
    for mistake, override in MISTAKES.items():
        for command in COMMANDS:
            argv = [sys.executable, "-m", f"cofee.cli.{command}", override]
            times, base = [], []
            for i in range(ROUNDS):
                pair = [(times, argv), (base, baseline_argv)]
                for bucket, args in pair if i % 2 == 0 else reversed(pair):
                    if args is baseline_argv:
                        start = time.perf_counter()
                        subprocess.run(args, check=True)
                        bucket.append(time.perf_counter() - start)
                    else:
                        bucket.append(wall(args))
            baseline_times += base
            rows.setdefault(mistake, {})[command] = round(
                statistics.median(times) / statistics.median(base), 3
            )
    worst_mistake, worst_command = max(
        ((m, c) for m in rows for c in rows[m]), key=lambda mc: rows[mc[0]][mc[1]]
    )
    baseline = statistics.median(baseline_times)
    worst = rows[worst_mistake][worst_command] * baseline
    fig = figure(
        "cli_config_error_startup",
        worst,
        "s",
        baseline,
        TARGET,
        note=f"slowest: cofee-{worst_command.replace('_', '-')} with a {worst_mistake.replace('_', ' ')}; "
        f"median of {ROUNDS} runs against `python -c 'import hydra'` ({baseline:.2f} s)",
        lower_is_better=True,
    )
    write_results("cli_startup", [fig], ratios=rows)
    return {"figures": [fig]}


if __name__ == "__main__":
    print(run())
