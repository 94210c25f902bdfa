"""The typed shape of the composed Hydra config: a wrong key or value fails at start-up, named.

Hydra already refuses overrides of keys that do not exist; merging into these dataclasses adds type
checks (an `int` that is not a number) and rejects unknown keys coming from YAML files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .clustering.kmeans import CLASS_WEIGHTS
from .encoder import EncoderConfig
from .errors import ConfigError
from .finetune import FinetuneConfig
from .gazetteer.config import GazetteerDataConfig
from .partial_labels import UNKNOWN_MODES
from .span_pooling import POOLING_MODES
from .stages.base import OptimConfig
from .stages.fet import REFRESH_FEATURES, FETClusterConfig
from .stages.nee import NOISE_STRATEGIES, NoiseConfig
from .tagging import SCHEMES
from .wiki.build_anchors import AnchorBuildConfig

KNOWN_STAGES = ("esi", "nee", "fet")
LOGGERS = ("csv", "wandb", "none")
LOGGER_MODES = ("offline", "online", "disabled")


@dataclass
class PathsConfig:
    root: str = "."
    data_dir: str = "${paths.root}/data"
    output_dir: str = "${paths.root}/outputs/${run_name}"


@dataclass
class AnchorDataConfig:
    dump: str | None = None
    corpus_dir: str = "${paths.data_dir}/anchors"
    build: AnchorBuildConfig = field(default_factory=AnchorBuildConfig)
    build_workers: int = 2
    span_kinds: list[str] = field(default_factory=lambda: ["anchor", "repeat", "title"])
    max_length: int = 128
    dev_fraction: float = 0.1
    split_seed: int = 0
    max_train_sentences: int | None = None
    bucket: bool = True
    num_workers: int = 0


@dataclass
class DataConfig:
    anchors: AnchorDataConfig = field(default_factory=AnchorDataConfig)
    gazetteer: GazetteerDataConfig = field(default_factory=GazetteerDataConfig)


@dataclass
class StageConfig:
    name: str = "esi"
    scheme: str = "BIO"
    dropout: float = 0.1
    batch_size: int = 16
    eval_batch_size: int = 64
    max_epochs: int = 1
    max_steps: int = -1
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class NEEStageConfig(StageConfig):
    name: str = "nee"
    max_epochs: int = 2
    max_train_sentences: int | None = 4000  # a seeded sample of the labelled corpus; null = all
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    type_balance: float = (
        0.0  # loss weight of a type's tags: (spans of the top type / its spans) ** this, <= 10
    )


@dataclass
class FETStageConfig(NEEStageConfig):
    """Stage 3: the NEE loss plus `lambda_cluster` x the cluster loss (conf/stages/fet.yaml)."""

    name: str = "fet"
    lambda_cluster: float = 0.001  # the CoFEE code's weight
    pooling: str = "sum"  # span vectors for the cluster head and the clustering (CoFEE: sum)
    feature_layer: int = -2  # hidden state the cluster head reads and k-means clusters (CoFEE: 11 of 12)
    refresh_every_n_epochs: int = 1
    refresh_features: str = "recorded"  # recorded: the epoch's own vectors | extract: an eval-mode pass
    cluster: FETClusterConfig = field(default_factory=FETClusterConfig)


@dataclass
class StagesConfig:
    esi: StageConfig = field(default_factory=StageConfig)
    nee: NEEStageConfig = field(default_factory=NEEStageConfig)
    fet: FETStageConfig = field(default_factory=FETStageConfig)


@dataclass
class TrainerConfig:
    """Passed to `pytorch_lightning.Trainer` as keyword arguments."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = True
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    fast_dev_run: Any = False
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True


@dataclass
class LoggerConfig:
    """`kind` csv, wandb or none; the rest applies to W&B (conf/logger/wandb.yaml)."""

    kind: str = "csv"
    project: str = "cofee"
    entity: str | None = None
    mode: str = "offline"  # online needs an API key; WANDB_MODE=offline/disabled in the environment wins
    group: str | None = None  # null: the run name (all stages of one curriculum run in one group)
    tags: list[str] = field(default_factory=list)
    log_model: bool = False  # true: upload the exported weights; false: a reference (path + manifest hash)
    save_dir: str | None = None  # null: the stage's (or fine-tune's) output folder


@dataclass
class CurriculumConfig:
    stages: list[str] = field(default_factory=lambda: ["esi", "nee", "fet"])  # in the order esi, nee, fet
    # A finished (or interrupted) stage whose settings changed is refused, naming the keys; true
    # retrains it instead, keeping the old export and checkpoints aside (`*.replaced-<hash>`).
    retrain_changed: bool = False
    # last.ckpt every N optimizer steps (and at every epoch end); 0: at epoch ends only
    checkpoint_every_n_steps: int = 50
    # run folders whose finished stages may be copied instead of trained, when trained with the same
    # inputs from the same parent export (e.g. the ESI and NEE of a sibling run that differs in FET only)
    reuse_from: list[str] = field(default_factory=list)


@dataclass
class RootConfig:
    seed: int = 13
    run_name: str = "default"
    stage: str | None = None  # null: curriculum.stages | all: every stage | one stage, from its predecessor
    resume: str | None = None  # a run folder: continue that run with its saved config (.hydra/config.yaml)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)


@dataclass
class GoldDataConfig:
    source: str | None = None
    split_dir: str = "${paths.data_dir}/gold/wnut16"
    split_seed: int = 0
    train_file: str | None = None
    dev_file: str | None = None
    test_file: str | None = None


@dataclass
class DenoisingConfig:
    """`make denoising`: NEE per noise strategy against the gazetteer that labelled it (conf/denoising.yaml)."""

    strategies: list[str] = field(default_factory=lambda: ["none", "partial", "self_training"])
    seeds: list[int] = field(default_factory=lambda: [13])
    eval_split: str = "train"  # gold split scored; never trained on (the study uses dev and test)
    mapping: str | None = None  # gold type -> coarse type YAML; null = conf/mappings/wnut16_coarse.yaml
    results: str = "results/nee_denoising.json"
    readme: str | None = "README.md"


@dataclass
class DenoisingRootConfig(RootConfig):
    gold: GoldDataConfig = field(default_factory=GoldDataConfig)
    denoising: DenoisingConfig = field(default_factory=DenoisingConfig)


def validate_denoising(cfg: DictConfig) -> DenoisingRootConfig:
    root: DenoisingRootConfig = validate(cfg, DenoisingRootConfig)
    for strategy in root.denoising.strategies:
        _choice("denoising.strategies", strategy, NOISE_STRATEGIES)
    _choice("denoising.eval_split", root.denoising.eval_split, ("train", "dev", "test"))
    return root


@dataclass
class GoldRunConfig:
    """What every run on gold data has: where, which encoder, which data, how to fine-tune."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    data: GoldDataConfig = field(default_factory=GoldDataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


@dataclass
class FinetuneRootConfig(GoldRunConfig):
    seed: int = 0
    run_name: str = "finetune"
    init_from: str | None = None
    fraction: float = 1.0
    kshot: int | None = None


@dataclass
class StudyConfig(GoldRunConfig):
    run_name: str = "study"
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.25, 1.0])
    kshots: list[int] = field(default_factory=list)
    variants: dict[str, list[str] | None] = field(default_factory=dict)
    # train only these variants (all when empty); Hydra cannot delete a null-valued key such as baseline
    only: list[str] = field(default_factory=list)
    merge: list[str] = field(default_factory=list)  # results files of parallel studies, merged into `results`
    results: str = "results/study.csv"
    plot: str = "docs/low_resource.png"
    readme: str | None = "README.md"
    report_only: bool = False  # rewrite the table and plot from `results` without training
    workers: int = 1  # fine-tunings run at once, each in its own process with cores / workers threads
    # reference variant -> the variants the report pairs with it, same seed and subset (empty: all others)
    paired_with: dict[str, list[str]] = field(default_factory=lambda: {"baseline": []})


def validate_study(cfg: DictConfig) -> StudyConfig:
    root: StudyConfig = _typed(cfg, StudyConfig)
    for f in root.fractions:
        if not 0 < f <= 1:
            raise ConfigError("fractions", f"each fraction must lie in (0, 1], got {f}")
    if not root.variants:
        raise ConfigError("variants", "name at least one variant")
    if root.workers < 1:
        raise ConfigError("workers", f"must be at least 1, got {root.workers}")
    for key, names in [("only", root.only)] + [
        (f"paired_with.{ref}", [ref, *compared]) for ref, compared in root.paired_with.items()
    ]:
        unknown = [name for name in names if name not in root.variants]
        if unknown:
            raise ConfigError(
                key, f"no variant named {', '.join(unknown)}; variants: {', '.join(root.variants)}"
            )
    return root


def _choice(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, f"'{value}' is not one of {', '.join(allowed)}")


def _typed(cfg: DictConfig, schema: type):
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        OmegaConf.resolve(merged)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(exc.full_key or "?", str(exc).splitlines()[0]) from None


def _check_logger(logger: LoggerConfig) -> None:
    _choice("logger.kind", logger.kind, LOGGERS)
    _choice("logger.mode", logger.mode, LOGGER_MODES)


def validate_finetune(cfg: DictConfig) -> FinetuneRootConfig:
    root: FinetuneRootConfig = _typed(cfg, FinetuneRootConfig)
    _check_logger(root.logger)
    _choice("finetune.scheme", root.finetune.scheme, SCHEMES)
    if not 0 < root.fraction <= 1:
        raise ConfigError("fraction", f"must lie in (0, 1], got {root.fraction}")
    if root.kshot is not None and root.kshot < 1:
        raise ConfigError("kshot", f"must be at least 1, got {root.kshot}")
    if root.finetune.optim.lr <= 0:
        raise ConfigError("finetune.optim.lr", f"must be positive, got {root.finetune.optim.lr}")
    return root


def _check_fet(fet: FETStageConfig) -> None:
    _choice("stages.fet.noise.strategy", fet.noise.strategy, NOISE_STRATEGIES)
    _choice("stages.fet.noise.unknown", fet.noise.unknown, UNKNOWN_MODES[1:])
    _choice("stages.fet.pooling", fet.pooling, POOLING_MODES)
    _choice("stages.fet.refresh_features", fet.refresh_features, REFRESH_FEATURES)
    _choice("stages.fet.cluster.class_weights", fet.cluster.class_weights, CLASS_WEIGHTS)
    _choice("stages.fet.cluster.use_gpu", str(fet.cluster.use_gpu).lower(), ("auto", "true", "false"))
    if fet.lambda_cluster < 0:
        raise ConfigError("stages.fet.lambda_cluster", f"must not be negative, got {fet.lambda_cluster}")
    if fet.refresh_every_n_epochs < 1:
        raise ConfigError(
            "stages.fet.refresh_every_n_epochs", f"must be at least 1, got {fet.refresh_every_n_epochs}"
        )
    fet.cluster.build(0).validate("stages.fet.cluster")


def validate(cfg: DictConfig, schema: type = RootConfig) -> RootConfig:
    """Type-check the composed config and return it as resolved dataclasses (`schema`: RootConfig or
    a root that extends it, such as DenoisingRootConfig)."""
    root: RootConfig = _typed(cfg, schema)
    for stage in root.curriculum.stages:
        _choice("curriculum.stages", stage, KNOWN_STAGES)
    ordered = [s for s in KNOWN_STAGES if s in root.curriculum.stages]
    if list(root.curriculum.stages) != ordered:
        raise ConfigError(
            "curriculum.stages",
            f"stages run in the order {', '.join(KNOWN_STAGES)}, each at most once; "
            f"got [{', '.join(root.curriculum.stages)}], use [{', '.join(ordered)}]",
        )
    if root.stage is not None:
        _choice("stage", root.stage, ("all", *KNOWN_STAGES))
    for folder in root.curriculum.reuse_from:
        if not Path(folder).is_dir():
            raise ConfigError("curriculum.reuse_from", f"{folder} is not a run folder (no such directory)")
    if root.curriculum.checkpoint_every_n_steps < 0:
        raise ConfigError(
            "curriculum.checkpoint_every_n_steps",
            f"must be 0 (epoch ends only) or positive, got {root.curriculum.checkpoint_every_n_steps}",
        )
    for name in KNOWN_STAGES:
        stage_cfg: StageConfig = getattr(root.stages, name)
        _choice(f"stages.{name}.scheme", stage_cfg.scheme, SCHEMES)
        if stage_cfg.optim.lr <= 0:
            raise ConfigError(f"stages.{name}.optim.lr", f"must be positive, got {stage_cfg.optim.lr}")
        if stage_cfg.batch_size < 1:
            raise ConfigError(f"stages.{name}.batch_size", f"must be at least 1, got {stage_cfg.batch_size}")
    noise = root.stages.nee.noise
    _choice("stages.nee.noise.strategy", noise.strategy, NOISE_STRATEGIES)
    _choice("stages.nee.noise.unknown", noise.unknown, UNKNOWN_MODES[1:])
    if not 0 < noise.relabel_rate <= 1:
        raise ConfigError("stages.nee.noise.relabel_rate", f"must lie in (0, 1], got {noise.relabel_rate}")
    for name in ("nee", "fet"):
        if getattr(root.stages, name).type_balance < 0:
            raise ConfigError(f"stages.{name}.type_balance", "must be 0 (off) or positive")
    _check_fet(root.stages.fet)
    _check_logger(root.logger)
    if not 0 < root.data.anchors.dev_fraction < 1:
        raise ConfigError("data.anchors.dev_fraction", "must lie strictly between 0 and 1")
    root.data.gazetteer.validate("data.gazetteer")
    return root


def to_plain(obj) -> dict:
    """A dataclass config as a plain dict (for hashes, manifests and loggers)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)
