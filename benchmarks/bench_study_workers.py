"""The low-resource study's fine-tunings per hour with `workers=2` against `workers=1`, same job.

Setup: the default study config (packaged MiniLM, WNUT 2016 splits) with the baseline variant only
(no pre-training), `JOBS` fine-tunings (fraction 0.1, seeds 1..JOBS) shortened to `STEPS` steps with a
dev pass every `STEPS // 2` and 200 bootstrap samples; each runs the real `run_study` into its own
results file. `workers=1` runs them one after another in this process with torch's default thread
count (every core); `workers=2` runs two at a time in spawned processes with cores / 2 threads each,
start-up and imports of the workers included.

Figure:

* ``study_workers2_speedup``: seconds with workers=1 / seconds with workers=2; target >= 1.2 on a
  machine with at least 2 cores (recorded as skipped with fewer). The rows of both runs are in the
  JSON, so one can check that they fine-tuned the same subsets.

Run: python -m benchmarks.bench_study_workers   (writes benchmarks/results/study_workers.json)
"""

from __future__ import annotations

import os
import time

from hydra import compose, initialize_config_module

from benchmarks.common import WORK, figure, write_results
from cofee.config import validate_study
from cofee.data_modules.gold_ner import splits_from_config
from cofee.experiments.study import run_study

NAME = "study_workers"
JOBS = 4
STEPS = 60


def study_config(workers: int):
    results = WORK / f"study-workers{workers}.csv"
    results.unlink(missing_ok=True)  # every row is trained afresh
    overrides = [
        "only=[baseline]",
        "fractions=[0.1]",
        f"seeds=[{','.join(str(s) for s in range(1, JOBS + 1))}]",
        f"finetune.max_steps={STEPS}",
        f"finetune.val_every_steps={STEPS // 2}",
        "finetune.bootstrap_samples=200",
        f"results={results}",
        f"workers={workers}",
    ]
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        return validate_study(compose(config_name="study", overrides=overrides))


def timed_study(workers: int) -> tuple[float, list]:
    study = study_config(workers)
    started = time.perf_counter()
    rows = run_study(study)
    return time.perf_counter() - started, rows


def run() -> dict:
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        reason = f"{cores} core: two workers have nothing to share"
        path = write_results(NAME, [], skipped=True, reason=reason)
        return {"path": str(path), "figures": [], "skipped": True, "reason": reason}
    warm = study_config(1)
    splits_from_config(
        warm.data, warm.finetune.scheme
    )  # the gold splits are written once, outside the timings
    serial_seconds, serial_rows = timed_study(1)
    parallel_seconds, parallel_rows = timed_study(2)
    figures = [
        figure(
            "study_workers2_speedup",
            serial_seconds / parallel_seconds,
            "x",
            1.0,
            1.2,
            note=f"{JOBS} fine-tunings of {STEPS} steps on {cores} cores: {serial_seconds:.0f} s with workers=1, "
            f"{parallel_seconds:.0f} s with workers=2",
        )
    ]
    path = write_results(
        NAME,
        figures,
        cores=cores,
        seconds={"workers1": round(serial_seconds, 1), "workers2": round(parallel_seconds, 1)},
        rows={
            "workers1": [(r.seed, r.train_sentences, r.test_f1) for r in serial_rows],
            "workers2": [(r.seed, r.train_sentences, r.test_f1) for r in parallel_rows],
        },
    )
    return {"path": str(path), "figures": figures}


if __name__ == "__main__":
    print(run())
