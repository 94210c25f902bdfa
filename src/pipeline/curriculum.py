"""Run the curriculum: each stage a Trainer fit that starts from the previous stage's export.

Layout of a run: outputs/<run>/<stage>/{checkpoints/, encoder/ (export + manifest.json), logs/}.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import OmegaConf

from cofee.callbacks.cluster_refresh import ClusterRefreshCallback
from cofee.callbacks.curriculum import CurriculumCallback
from cofee.callbacks.finite_loss import FiniteLossGuard
from cofee.callbacks.resume import (
    AtomicCheckpointIO,
    LoaderPositionCallback,
    StepSeedCallback,
    last_checkpoints,
)
from cofee.callbacks.self_training import SelfTrainingCallback
from cofee.callbacks.wandb_run_id import WandbRunIdCallback, read_run_id
from cofee.clustering.kmeans import ClusterConfig
from cofee.config import KNOWN_STAGES, RootConfig, to_plain
from cofee.data.alignment import special_tokens
from cofee.data_modules.cluster_spans import ClusterDataModule
from cofee.data_modules.gazetteer_labelled import GazetteerDataModule
from cofee.data_modules.wiki_anchor import WikiAnchorDataModule
from cofee.models.export import MANIFEST, load_export_head, load_start, manifest_hash, read_export_manifest
from cofee.pipeline.config_diff import changed_keys, describe_changes, drop_added_defaults
from cofee.pipeline.loggers import finish_logger, log_export
from cofee.pipeline.loggers import make_logger as make_run_logger
from cofee.stages.esi import ENTITY_TYPE, ESIModule
from cofee.stages.fet import FETModule
from cofee.stages.nee import NEEModule
from cofee.utils.errors import ConfigError, InputFileError
from cofee.utils.io import atomic_directory, atomic_write_json, read_json, stable_hash

# What a stage builder returns: its module, its datamodule and any stage-specific callbacks.
StageParts = tuple[pl.LightningModule, pl.LightningDataModule, list[pl.Callback]]

log = logging.getLogger(__name__)
INPUTS = "inputs.json"  # a stage's recorded inputs, written when it starts (refuses a stale resume)


def build_esi(cfg: RootConfig, encoder, tokenizer, init_from: Path | None) -> StageParts:
    stage = cfg.stages.esi
    module = ESIModule(encoder, stage.optim, scheme=stage.scheme, dropout=stage.dropout)
    data = cfg.data.anchors
    datamodule = WikiAnchorDataModule(
        tokenizer=tokenizer,
        label2id=module.head.label2id,
        corpus_dir=data.corpus_dir,
        dump=data.dump,
        build=data.build,
        build_workers=data.build_workers,
        scheme=stage.scheme,
        entity_type=ENTITY_TYPE,
        span_kinds=tuple(data.span_kinds),
        max_length=data.max_length,
        batch_size=stage.batch_size,
        eval_batch_size=stage.eval_batch_size,
        dev_fraction=data.dev_fraction,
        split_seed=data.split_seed,
        max_train_sentences=data.max_train_sentences,
        seed=cfg.seed,
        bucket=data.bucket,
        num_workers=data.num_workers,
        cache_dir=data.cache_dir,
        num_proc=data.num_proc,
    )
    return module, datamodule, []


def build_nee(cfg: RootConfig, encoder, tokenizer, init_from: Path | None) -> StageParts:
    stage, gazetteer = cfg.stages.nee, cfg.data.gazetteer
    module = NEEModule(
        encoder, stage.optim, gazetteer.types, stage.scheme, stage.dropout, stage.noise, stage.type_balance
    )
    if init_from is None or (read_export_manifest(init_from).get("stage") != "esi" and stage.noise.esi_spans):
        log.warning("nee: not started from an ESI export; only untyped anchors count as unknown-type spans")
    datamodule = gazetteer_data_module(GazetteerDataModule, cfg, stage, tokenizer, init_from)
    return module, datamodule, _self_training(cfg, stage)


def gazetteer_data_module(kind: type, cfg: RootConfig, stage, tokenizer, init_from: Path | None):
    """The gazetteer-labelled data of NEE and FET (`kind`: the data module class)."""
    gazetteer, anchors = cfg.data.gazetteer, cfg.data.anchors
    return kind(
        tokenizer=tokenizer,
        types=gazetteer.types,
        gazetteer=gazetteer,
        anchors=anchors,
        scheme=stage.scheme,
        esi_export=init_from if stage.noise.esi_spans and stage.noise.strategy != "none" else None,
        max_length=anchors.max_length,
        batch_size=stage.batch_size,
        eval_batch_size=stage.eval_batch_size,
        dev_fraction=anchors.dev_fraction,  # the same dev pages as ESI
        split_seed=anchors.split_seed,
        max_train_sentences=stage.max_train_sentences,
        seed=cfg.seed,
        bucket=anchors.bucket,
        num_workers=anchors.num_workers,
        # the token cache: `anchors.cache_dir` and `anchors.num_proc`, read from `anchors`
        sample_key=f"stages.{'fet' if issubclass(kind, ClusterDataModule) else 'nee'}.max_train_sentences",
    )


def _self_training(cfg: RootConfig, stage) -> list[pl.Callback]:
    if stage.noise.strategy != "self_training":
        return []
    noise = stage.noise
    return [
        SelfTrainingCallback(noise.relabel_rate, noise.relabel_threshold, cfg.seed, stage.eval_batch_size)
    ]


def build_fet(cfg: RootConfig, encoder, tokenizer, init_from: Path | None) -> StageParts:
    """FET from the NEE export: its encoder, its typed head when the export has one, a fresh cluster
    head; the data of NEE with span ids; a callback that keeps the pseudo-labels fresh."""
    stage, gazetteer = cfg.stages.fet, cfg.data.gazetteer
    module = FETModule(
        encoder,
        stage.optim,
        gazetteer.types,
        k=stage.cluster.k,
        scheme=stage.scheme,
        dropout=stage.dropout,
        noise=stage.noise,
        pooling=stage.pooling,
        feature_layer=stage.feature_layer,
        lambda_cluster=stage.lambda_cluster,
        suffix_len=len(special_tokens(tokenizer)[1]),
        type_balance=stage.type_balance,
    )
    parent_stage = read_export_manifest(init_from).get("stage") if init_from is not None else None
    if parent_stage != "nee":
        log.warning("fet: started from %s, not from an NEE export", parent_stage or "the base encoder")
    head = load_export_head(init_from, encoder.config.hidden_size) if init_from is not None else None
    if head is not None and head.spec() == module.head.spec():
        module.head.load_state_dict(head.state_dict())
        log.info("fet: typed head taken from %s", init_from)
    else:
        log.warning(
            "fet: %s has no typed head of this scheme and types; the typed head starts fresh", init_from
        )
    datamodule = gazetteer_data_module(ClusterDataModule, cfg, stage, tokenizer, init_from)
    refresh = ClusterRefreshCallback(
        ClusterConfig.from_stage(stage.cluster, cfg.seed),
        stage.refresh_every_n_epochs,
        cfg.seed,
        stage.refresh_features,
    )
    return module, datamodule, [refresh, *_self_training(cfg, stage)]


STAGE_BUILDERS = {"esi": build_esi, "nee": build_nee, "fet": build_fet}
# The data configs a stage's result depends on (NEE and FET label the anchor corpus with the gazetteer).
STAGE_DATA = {"esi": ("anchors",), "nee": ("anchors", "gazetteer"), "fet": ("anchors", "gazetteer")}


def stage_inputs(cfg: RootConfig, stage: str, parent: str | None) -> dict:
    """What a stage's result depends on, under the config keys a user would override: the encoder
    (first stage only), its data configs, its training config, seed, and its parent export."""
    return {
        "model": to_plain(cfg.model) if parent is None else None,
        "data": {name: to_plain(getattr(cfg.data, name)) for name in STAGE_DATA[stage]},
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
    for name in STAGE_DATA[stage]:
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
    trainer_kwargs = {k: v for k, v in asdict(cfg.trainer).items() if v is not None}
    logger = make_logger(cfg, stage, stage_dir)
    trainer = pl.Trainer(
        **trainer_kwargs,
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


def stage_plan(cfg: RootConfig) -> list[tuple[str, str | None]]:
    """The stages this run trains (or finds done), each with the stage whose export it starts from.

    `stage=null`: `curriculum.stages`, each from the one before it (the first from `model.*`);
    `stage=all`: every stage in order; `stage=<name>`: that stage only, from its predecessor (in
    `curriculum.stages` when listed there, else the stage before it) in the same run folder."""
    if cfg.stage is not None and cfg.stage != "all":
        chain = cfg.curriculum.stages if cfg.stage in cfg.curriculum.stages else KNOWN_STAGES
        at = list(chain).index(cfg.stage)
        return [(cfg.stage, chain[at - 1] if at else None)]
    chain = list(KNOWN_STAGES) if cfg.stage == "all" else list(cfg.curriculum.stages)
    plan = [(stage, chain[i - 1] if i else None) for i, stage in enumerate(chain)]
    for stage, parent in plan:
        before = KNOWN_STAGES[: KNOWN_STAGES.index(stage)]
        skipped = [s for s in before if s not in chain]
        if skipped:
            start = f"the {parent} export" if parent else "the encoder in model.*"
            log.warning("curriculum skips %s: %s starts from %s", ", ".join(skipped), stage, start)
    return plan


def run_curriculum(cfg: RootConfig) -> dict[str, dict]:
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    results = {}
    for stage, parent in stage_plan(cfg):
        init_from = output_dir / parent / "encoder" if parent else None
        if init_from is not None and not (init_from / MANIFEST).is_file():
            raise ConfigError(
                "stage",
                f"stage={stage} starts from the {parent} export of this run, {init_from}, which does not "
                f"exist: run stage={parent} (same run_name) first, or stage=all",
            )
        results[stage] = run_stage(cfg, stage, init_from=init_from)
    return results
