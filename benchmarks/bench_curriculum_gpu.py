"""The whole curriculum (ESI, NEE, FET) on one GPU under `trainer=ddp`: training tokens/s per stage.

Each figure is a stage's real (non-pad) tokens per second of training under `trainer=ddp` with one
device (the DDP strategy, its process group and gradient hooks), against the same stage under
`trainer=gpu` (no DDP wrapper), in the same process: the mean of `ROUNDS` runs of each, alternating
which goes first; ratio = DDP / plain, target >= 0.9 (the DDP path costs at most 10% on one GPU). Both runs are the real `cofee-pretrain stage=all`
code path (`cofee.pipeline.curriculum.run_curriculum`) with the packaged MiniLM, bf16-mixed, `STEPS` training
batches an epoch (stage defaults otherwise: batch 16, ESI one epoch, NEE and FET two), on the
anchor corpus, gazetteer and labelled corpus of the gensim sample in benchmarks/work (built when
missing, as the other benchmarks do). Timing: from the end of the `WARMUP`-th batch of every epoch
to the end of its last batch, with the GPU synchronised at both ends (validation, self-training
rounds and cluster refreshes fall outside).

On a machine without a CUDA GPU the result file records that it was skipped, and why, with no
figures (`make bench` stays green there).

Run: python -m benchmarks.bench_curriculum_gpu   (writes benchmarks/results/curriculum_gpu.json)
     python -m benchmarks.bench_curriculum_gpu --cpu-check   (the same code on the CPU, tiny model and
     few steps, result under benchmarks/work/; checks the benchmark itself, not a figure)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from benchmarks.common import RESULTS, WORK, figure, write_results

NAME = "curriculum_gpu"
STAGES = ("esi", "nee", "fet")
STEPS = 60  # training batches an epoch
WARMUP = 5  # batches an epoch left out of the timing
ROUNDS = 2  # the two variants alternate which runs first (the first run in a process warms caches)
TARGET = 0.9


class StageThroughput(pl.Callback):
    """Real tokens and seconds of the training batches after the first `warmup` of each epoch.

    With `sync_each_step` (the default) each batch is timed on its own, so whatever runs between
    batches (validation, checkpoints) stays out of the figure; the price is a wait for the GPU at every
    step, which stops the CPU from queueing the next step while the GPU works. Without it, the clock runs
    from the end of the warm-up to the end of the epoch with one wait at each end, as a plain loop is
    timed: for runs with nothing between their batches (`benchmarks/gpu_check.py`).
    """

    def __init__(self, warmup: int, sync_each_step: bool = True):
        self.warmup = warmup
        self.sync_each_step = sync_each_step
        self.tokens = 0
        self.seconds = 0.0
        self._started: float | None = None
        self._pending_tokens: torch.Tensor | None = None  # summed on the device: no wait per step

    @staticmethod
    def _now(module: pl.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started, self._pending_tokens = None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == self.warmup:
            self._started = self._now(pl_module)
        elif batch_idx >= self.warmup and self._started is not None:
            if not self.sync_each_step:
                tokens = batch["attention_mask"].sum()
                self._pending_tokens = (
                    tokens if self._pending_tokens is None else self._pending_tokens + tokens
                )
                return
            now = self._now(pl_module)
            self.tokens += int(batch["attention_mask"].sum())
            self.seconds += now - self._started
            self._started = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.sync_each_step and self._started is not None and self._pending_tokens is not None:
            self.seconds += self._now(pl_module) - self._started
            self.tokens += int(self._pending_tokens)
            self._started, self._pending_tokens = None, None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def curriculum_throughput(overrides: list[str], out_dir: Path, warmup: int = WARMUP) -> dict[str, float]:
    """tokens/s per stage of `cofee-pretrain stage=all <overrides>` into a fresh `out_dir`."""
    from hydra import compose, initialize_config_module

    from cofee.config import validate
    from cofee.pipeline import curriculum

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        cfg = validate(
            compose(
                config_name="pretrain",
                overrides=[
                    f"paths.data_dir={WORK}",
                    f"paths.output_dir={out_dir}",
                    "stage=all",
                    "logger=none",
                    "trainer.enable_progress_bar=false",
                    "curriculum.checkpoint_every_n_steps=0",  # the save at the epoch end only
                    *overrides,
                ],
            )
        )
    timers = {stage: StageThroughput(warmup) for stage in STAGES}
    builders = dict(curriculum.STAGE_BUILDERS)

    def timed(stage, build):
        def builder(*args, **kwargs):
            module, datamodule, callbacks = build(*args, **kwargs)
            return module, datamodule, [*callbacks, timers[stage]]

        return builder

    try:
        for stage in STAGES:
            curriculum.STAGE_BUILDERS[stage] = timed(stage, builders[stage])
        curriculum.run_curriculum(cfg)
    finally:
        curriculum.STAGE_BUILDERS.update(builders)
    return {stage: timers[stage].tokens_per_s for stage in STAGES}


def _measure(ddp: list[str], plain: list[str], steps: int, warmup: int, rounds: int) -> tuple[dict, dict]:
    """Mean tokens/s per stage of each variant over `rounds` (alternating which goes first)."""
    common = [f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=4"]
    trials: dict[str, list[dict]] = {"ddp": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="cofee-bench-") as tmp:
        for n in range(rounds):
            order = [("ddp", ddp), ("plain", plain)]
            for name, settings in order if n % 2 == 0 else order[::-1]:
                out = Path(tmp) / f"{name}-{n}"
                trials[name].append(curriculum_throughput([*common, *settings], out, warmup))
    mean = {k: {s: sum(t[s] for t in v) / len(v) for s in STAGES} for k, v in trials.items()}
    return mean["ddp"], mean["plain"]


def _figures(under_ddp: dict, without: dict, note: str) -> list[dict]:
    return [
        figure(
            f"curriculum_{stage}_ddp_1gpu", under_ddp[stage], "real tokens/s", without[stage], TARGET, note
        )
        for stage in STAGES
    ]


def run() -> dict:
    if not torch.cuda.is_available():
        reason = (
            "no CUDA GPU on this machine (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}); run `make bench` on a machine with a GPU"
        )
        path = write_results(NAME, [], skipped=True, reason=reason)
        print(f"{NAME}: skipped: {reason}")
        return {"path": str(path), "figures": [], "skipped": True, "reason": reason}
    gpu = torch.cuda.get_device_name(0)
    precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    settings = ["trainer.accelerator=gpu", "trainer.devices=1", f"trainer.precision={precision}"]
    settings.append("trainer.deterministic=false")
    under_ddp, without = _measure(
        ["trainer=ddp", *settings], ["trainer=gpu", *settings], STEPS, WARMUP, ROUNDS
    )
    note = f"1 x {gpu}, {precision}; trainer=ddp (devices=1) vs trainer=gpu, same process, mean of {ROUNDS}"
    path = write_results(
        NAME,
        _figures(under_ddp, without, note),
        skipped=False,
        gpu=gpu,
        precision=precision,
        steps_per_epoch=STEPS,
        warmup_batches=WARMUP,
        rounds=ROUNDS,
        tokens_per_s={"ddp": under_ddp, "single_device": without},
    )
    return json.loads(path.read_text(encoding="utf-8"))


def cpu_check() -> dict:
    """The benchmark's code on the CPU (tiny encoder, 8 batches an epoch, DDP with one process)."""
    tiny = ["model=tiny", "experiment=smoke", "trainer.accelerator=cpu", "trainer.devices=1"]
    under_ddp, without = _measure(["trainer=ddp", *tiny], ["trainer=cpu", *tiny], steps=8, warmup=2, rounds=1)
    result = {"figures": _figures(under_ddp, without, "CPU check, not a GPU figure"), "cpu_check": True}
    out = WORK / f"{NAME}_cpu_check.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    outcome = cpu_check() if "--cpu-check" in sys.argv[1:] else run()
    for fig in outcome["figures"]:
        print(fig)
    print(RESULTS / f"{NAME}.json" if "--cpu-check" not in sys.argv[1:] else WORK / f"{NAME}_cpu_check.json")
