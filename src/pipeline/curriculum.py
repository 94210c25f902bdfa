"""Run the curriculum: each stage a Trainer fit that starts from the previous stage's export.

Layout of a run: outputs/<run>/<stage>/{checkpoints/, encoder/ (export + manifest.json), logs/}.
The stages, their order and how each is built come from the registry (`cofee.pipeline.recipes`);
this module names none of them.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import OmegaConf

from cofee.callbacks.curriculum import CurriculumCallback
from cofee.callbacks.finite_loss import FiniteLossGuard
from cofee.callbacks.resume import (
    AtomicCheckpointIO,
    LoaderPositionCallback,
    StepSeedCallback,
    last_checkpoints,
)
from cofee.callbacks.wandb_run_id import WandbRunIdCallback, read_run_id
from cofee.config import RootConfig, known_stages, to_plain
from cofee.models.export import MANIFEST, load_start, manifest_hash, read_export_manifest
from cofee.pipeline.config_diff import changed_keys, describe_changes, drop_added_defaults
from cofee.pipeline.loggers import finish_logger, log_export
from cofee.pipeline.loggers import make_logger as make_run_logger
from cofee.pipeline.recipes.registry import STAGE_BUILDERS, stage_spec
from cofee.pipeline.trainer_kwargs import trainer_kwargs
from cofee.utils.errors import ConfigError, InputFileError
from cofee.utils.io import atomic_directory, atomic_write_json, read_json, stable_hash

log = logging.getLogger(__name__)
INPUTS = "inputs.json"  # a stage's recorded inputs, written when it starts (refuses a stale resume)


def stage_inputs(cfg: RootConfig, stage: str, parent: str | None) -> dict:
    """What a stage's result depends on, under the config keys a user would override: the encoder
    (first stage only), its data configs, its training config, seed, and its parent export."""
    return {
        "model": to_plain(cfg.model) if parent is None else None,
        "data": {name: to_plain(getattr(cfg.data, name)) for name in stage_spec(stage).data},
        "stages": {stage: to_plain(getattr(cfg.stages, stage))},
        "trainer": {k: v for k, v in asdict(cfg.trainer).items() if k in ("precision", "gradient_clip_val")},
        "seed": cfg.seed,
        "parent": parent,
    }


def input_defaults(stage: str) -> dict:
    """The code's defaults for the config parts of `stage_inputs` (data paths left out: they are
    interpolations with no default of their own)."""
    defaults = RootConfig()
    data = {}
    for name in stage_spec(stage).data:
        plain = OmegaConf.to_container(OmegaConf.structured(getattr(defaults.data, name)), resolve=False)
        data[name] = {k: v for k, v in plain.items() if not (isinstance(v, str) and "${" in v)}
    return {
        "model": to_plain(defaults.model),
        "data": data,
        "stages": {stage: to_plain(getattr(defaults.stages, stage))},
        "trainer": {k: getattr(defaults.trainer, k) for k in ("precision", "gradient_clip_val")},
    }


def stage_config_hash(cfg: RootConfig, stage: str, parent: str | None) -> str:
    return stable_hash(stage_inputs(cfg, stage, parent))


def _set_aside(path: Path, tag: str) -> Path:
    """Keep a replaced export or checkpoint folder under a new name: nothing a user made is lost."""
    target = path.with_name(f"{path.name}.replaced-{tag}")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.replaced-{tag}-{n}"), n + 1
    path.rename(target)
    log.warning("kept the replaced %s as %s", path, target)
    return target


def input_changes(stage: str, previous: dict, inputs: dict) -> list:
    """The keys whose values differ between two stages' inputs (keys added by a later version at their
    defaults are no change)."""
    changed = changed_keys(previous, inputs)
    return drop_added_defaults(changed, input_defaults(stage)) if changed else changed


def reuse_identical_export(cfg: RootConfig, stage: str, export_dir: Path, inputs: dict) -> bool:
    """Copy this stage's export from a `curriculum.reuse_from` run folder that trained it with the same
    inputs (same settings and the same parent export), instead of training it again."""
    for folder in cfg.curriculum.reuse_from:
        source = Path(folder) / stage / "encoder"
        if Path(folder).resolve() == export_dir.parent.parent.resolve() or not (source / MANIFEST).is_file():
            continue
        previous = read_export_manifest(source).get("inputs")
        if previous is None or input_changes(stage, previous, inputs):
            continue
        with atomic_directory(export_dir) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        log.info("%s: the same stage was trained in %s; its export copied to %s", stage, folder, export_dir)
        return True
    return False


def check_stage_inputs(cfg: RootConfig, stage: str, stage_dir: Path, inputs: dict) -> bool:
    """True when the stage is finished with these inputs. A finished or interrupted stage with other
    inputs is refused, naming the keys that differ, unless `curriculum.retrain_changed` is set; then
    its export and checkpoints are set aside and the stage retrains."""
    export_dir, checkpoints, recorded = stage_dir / "encoder", stage_dir / "checkpoints", stage_dir / INPUTS
    previous, finished = None, False
    if (export_dir / MANIFEST).is_file():
        previous, finished = read_export_manifest(export_dir).get("inputs"), True
    elif (checkpoints / "last.ckpt").is_file() and recorded.is_file():
        previous = read_json(recorded)
    if previous is not None:
        changed = input_changes(stage, previous, inputs)
        if not changed:
            return finished  # finished: skip; interrupted with the same inputs: resume from last.ckpt
    if previous is not None or finished:
        changes = describe_changes(changed) if previous else "settings not recorded by this version"
        if not cfg.curriculum.retrain_changed:
            raise ConfigError(
                f"stages.{stage}",
                f"{stage_dir} holds a {stage} stage trained with other settings: {changes}; rerun with "
                "curriculum.retrain_changed=true to retrain it (the old one is kept aside) or pick another run_name",
            )
        log.warning("%s: settings changed (%s); retraining", stage, changes)
        for folder in (export_dir, checkpoints):
            if folder.exists():
                _set_aside(folder, stable_hash(previous, length=8))
    atomic_write_json(recorded, inputs)
    return False


def make_logger(cfg: RootConfig, stage: str, stage_dir: Path):
    """The stage's logger (src/loggers.py); a W&B run resumed from `last.ckpt` keeps its id."""
    last = stage_dir / "checkpoints" / "last.ckpt"
    return make_run_logger(
        cfg.logger,
        stage_dir,
        name=f"{cfg.run_name}/{stage}",
        group=cfg.run_name,
        job_type=stage,
        config=to_plain(cfg),
        resume_id=read_run_id(last) if cfg.logger.kind == "wandb" else None,
    )


def check_checkpoint(path: Path) -> None:
    """Fail with the file named when a checkpoint to resume from cannot be read (a truncated copy,
    a disk that filled up), before Lightning half-restores it."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... by cause
        raise InputFileError(
            path,
            f"cannot read this checkpoint ({str(exc).splitlines()[0][:120]}); move it away to restart the stage",
        ) from None
    missing = [key for key in ("state_dict", "optimizer_states", "loops") if key not in state]
    if missing:
        raise InputFileError(path, f"not a Lightning checkpoint of a stage (no {', '.join(missing)})")


def run_stage(cfg: RootConfig, stage: str, init_from: Path | None = None) -> dict:
    """Train one stage (or find it done) and return its export manifest."""
    stage_dir = Path(cfg.paths.output_dir) / stage
    export_dir = stage_dir / "encoder"
    parent = manifest_hash(read_export_manifest(init_from)) if init_from else None
    inputs = stage_inputs(cfg, stage, parent)
    if not (export_dir / MANIFEST).is_file() and not (stage_dir / "checkpoints" / "last.ckpt").is_file():
        reuse_identical_export(cfg, stage, export_dir, inputs)
    if check_stage_inputs(cfg, stage, stage_dir, inputs):
        log.info("%s: up to date in %s, skipped", stage, export_dir)
        return read_export_manifest(export_dir)

    # the same start whether or not earlier stages ran in this process (a resumed curriculum skips them)
    pl.seed_everything(cfg.seed, workers=True)
    encoder, tokenizer, _ = load_start(init_from, cfg.model)
    module, datamodule, stage_callbacks = STAGE_BUILDERS[stage](cfg, encoder, tokenizer, init_from)
    if getattr(module, "stage_name", stage) != stage:  # metric keys read `<stage_name>/<split>/...`
        raise TypeError(f"the {stage} recipe built a module whose stage_name is {module.stage_name!r}")
    handoff = CurriculumCallback(
        stage,
        export_dir,
        tokenizer,
        inputs,
        config={"stage": to_plain(getattr(cfg.stages, stage)), "seed": cfg.seed},
        init_from=init_from,
        log_export=partial(
            log_export, kind="encoder", name=f"{cfg.run_name}-{stage}-encoder", copy=cfg.logger.log_model
        ),
    )
    # last.ckpt every N steps and at every epoch end; resumed exactly (callbacks/resume.py)
    checkpoints = last_checkpoints(stage_dir / "checkpoints", cfg.curriculum.checkpoint_every_n_steps)
    stage_cfg = getattr(cfg.stages, stage)
    logger = make_logger(cfg, stage, stage_dir)
    trainer = pl.Trainer(
        **trainer_kwargs(cfg.trainer),  # a DDP strategy with trainer.ddp_timeout_minutes
        max_epochs=stage_cfg.max_epochs,
        max_steps=stage_cfg.max_steps,
        default_root_dir=str(stage_dir),
        logger=logger,
        callbacks=[
            FiniteLossGuard(stage),  # a NaN stops the stage before its backward pass and any save
            *checkpoints,
            StepSeedCallback(cfg.seed),
            LoaderPositionCallback(),
            handoff,  # checks the parent export at fit start, exports at fit end
            WandbRunIdCallback(),
            *stage_callbacks,
        ],
        use_distributed_sampler=False,  # our batch sampler shards itself across ranks
        plugins=[AtomicCheckpointIO()],  # a save cut short leaves the previous last.ckpt whole
    )
    last = stage_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        check_checkpoint(last)
        log.info("%s: resuming from %s", stage, last)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    except BaseException:
        finish_logger(logger, failed=True)
        raise
    finish_logger(logger)  # the next stage must not log into this W&B run
    return read_export_manifest(export_dir)


def stage_chain(cfg: RootConfig) -> list[tuple[str, str | None]]:
    """The stages this run trains (or finds done), each with the stage whose export it starts from.

    `stage=null`: `curriculum.stages`, each from the one before it (the first from `model.*`);
    `stage=all`: every stage in order; `stage=<name>`: that stage only, from its predecessor (in
    `curriculum.stages` when listed there, else the stage before it) in the same run folder."""
    if cfg.stage is not None and cfg.stage != "all":
        chain = cfg.curriculum.stages if cfg.stage in cfg.curriculum.stages else known_stages()
        at = list(chain).index(cfg.stage)
        return [(cfg.stage, chain[at - 1] if at else None)]
    chain = list(known_stages()) if cfg.stage == "all" else list(cfg.curriculum.stages)
    return [(stage, chain[i - 1] if i else None) for i, stage in enumerate(chain)]


def stage_plan(cfg: RootConfig) -> list[tuple[str, str | None]]:
    """`stage_chain`, with a warning for each stage a curriculum skips."""
    plan = stage_chain(cfg)
    if cfg.stage is not None and cfg.stage != "all":
        return plan
    chain = [stage for stage, _ in plan]
    for stage, parent in plan:
        before = known_stages()[: known_stages().index(stage)]
        skipped = [s for s in before if s not in chain]
        if skipped:
            start = f"the {parent} export" if parent else "the encoder in model.*"
            log.warning("curriculum skips %s: %s starts from %s", ", ".join(skipped), stage, start)
    return plan


def run_curriculum(cfg: RootConfig) -> dict[str, dict]:
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    results = {}
    plan = stage_plan(cfg)
    for stage, _ in plan:
        stage_spec(stage)  # a stage without a recipe is named before any stage trains
    for stage, parent in plan:
        init_from = output_dir / parent / "encoder" if parent else None
        if init_from is not None and not (init_from / MANIFEST).is_file():
            raise ConfigError(
                "stage",
                f"stage={stage} starts from the {parent} export of this run, {init_from}, which does not "
                f"exist: run stage={parent} (same run_name) first, or stage=all",
            )
        results[stage] = run_stage(cfg, stage, init_from=init_from)
    return results
