"""The token caches a curriculum reads, built in one process before a multi-GPU job (`cofee-build-cache`).

A stage's data module builds its token cache in `prepare_data`, on one process per node, while every
other DDP rank waits at Lightning's setup barrier (`trainer.ddp_timeout_minutes`, 30 by default): on a
Wikipedia-sized corpus, for hours. `build_caches` builds each planned stage's data module with the
stage's own recipe and runs its `prepare_data` (the corpora when missing, then the token cache), so the
cache lands under the key the training run looks up: the corpus, the tokenizer's content and the
windowing. A stage sharing another's cache (NEE and FET) is prepared once. What the training run
computes on every rank in `setup` (the parent-head spans, which need the trained parent export, and
FET's span columns, keyed by them) is left to it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cofee.config import RootConfig
from cofee.utils.io import stable_hash

HEARTBEAT_S = 60.0  # a line this often while a cache builds: a large corpus takes hours
log = logging.getLogger(__name__)


@dataclass
class CacheJob:
    """One token cache and the stages that read it."""

    stages: list[str]
    datamodule: object
    folder: Path | None = None
    built: bool = False
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)


@contextmanager
def heartbeat(what: str, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Log `what` and the time spent on it every `every` seconds until the block ends."""
    done, started = threading.Event(), time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            log.info("%s: %.0f min so far", what, (time.perf_counter() - started) / 60)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def stage_datamodule(cfg: RootConfig, stage: str, encoder, tokenizer):
    """The data module the stage's recipe builds, without a parent export: the token cache does not
    depend on it (NEE and FET read a copy of the model's tokenizer from their parent's export)."""
    from cofee.pipeline.recipes.registry import STAGE_BUILDERS

    # the recipes warn that the stage starts without its parent export, which a cache build never has
    recipes = logging.getLogger("cofee.pipeline.recipes")
    level = recipes.level
    recipes.setLevel(logging.ERROR)
    try:
        _, datamodule, _ = STAGE_BUILDERS[stage](cfg, encoder, tokenizer, None)
    finally:
        recipes.setLevel(level)
    return datamodule


def plan_caches(cfg: RootConfig) -> list[CacheJob]:
    """The token caches of the stages `cofee-pretrain` would run with this config, one job per cache."""
    from cofee.models.export import load_start
    from cofee.pipeline.curriculum import stage_plan
    from cofee.pipeline.recipes.registry import stage_spec

    stages = [stage for stage, _ in stage_plan(cfg)]
    for stage in stages:
        stage_spec(stage)  # a stage without a recipe is named before anything is loaded
    encoder, tokenizer, _ = load_start(None, cfg.model)
    jobs: dict[str, CacheJob] = {}
    for stage in stages:
        datamodule = stage_datamodule(cfg, stage, encoder, tokenizer)
        if not hasattr(datamodule, "ensure_cache"):
            log.info("%s: its data module keeps no token cache", stage)
            continue
        # the same data configs, cache folder and windowing: the same cache (NEE's and FET's)
        same = stable_hash([stage_spec(stage).data, str(datamodule.cache_dir), datamodule.cache_settings()])
        if same in jobs:
            jobs[same].stages.append(stage)
        else:
            jobs[same] = CacheJob([stage], datamodule)
    return list(jobs.values())


def build(job: CacheJob, what: str) -> None:
    """Prepare the job's data (its corpora, then its token cache) as `prepare_data` would in training."""
    from cofee.data_modules.token_cache import load_cache_manifest

    root = Path(job.datamodule.cache_dir)
    before = {path.name for path in root.iterdir()} if root.is_dir() else set()
    started = time.perf_counter()
    log.info("%s: preparing the corpus and token cache of %s", what, ", ".join(job.stages))
    job.datamodule.cache_progress = True  # one process: the datasets progress bars are readable
    with heartbeat(f"{what}: {', '.join(job.stages)}"):
        job.datamodule.prepare_data()
    job.seconds = time.perf_counter() - started
    job.folder = job.datamodule.ensure_cache()  # there now: this only finds it
    job.built = job.folder.name not in before
    job.counts = load_cache_manifest(job.folder)["counts"]


def describe(job: CacheJob) -> str:
    counts = ", ".join(
        f"{split} {c['sentences']} sentences / {c['windows']} windows" for split, c in job.counts.items()
    )
    state = f"built in {job.seconds:.1f} s" if job.built else "already there"
    return f"token cache of {', '.join(job.stages)}: {state}: {job.folder} ({counts})"


def build_caches(cfg: RootConfig) -> list[CacheJob]:
    """Build (or find) each cache of the planned stages; one line on stdout per cache as it is done."""
    jobs = plan_caches(cfg)
    for number, job in enumerate(jobs, 1):
        build(job, f"cache {number}/{len(jobs)}")
        print(describe(job), flush=True)
    return jobs
