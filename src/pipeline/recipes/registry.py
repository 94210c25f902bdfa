"""The registry of pre-training stages: what the curriculum needs to run a stage, by its name.

A stage has two halves, kept in two layers:
- its config `stages.<name>` and its place in the curriculum order belong to the schema
  (`cofee.config`: the fields of StagesConfig, `known_stages()`), so a command checks them before
  it imports torch;
- its recipe lives here: the `data.*` configs its result depends on (part of its input hash) and
  the builder that makes its LightningModule, data module and callbacks. Stages, data modules and
  callbacks are sibling layers that do not import each other, so this wiring sits in the pipeline.

A `StageSpec` joins both halves. `cofee.pipeline.curriculum` reads only specs and names no stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass

import pytorch_lightning as pl

from cofee.config import (
    DataConfig,
    StageConfig,
    add_stage_config,
    known_stages,
    remove_stage_config,
    stages_schema,
)
from cofee.utils.errors import ConfigError

# What a builder returns: the stage's module, its data module and its own callbacks.
StageParts = tuple[pl.LightningModule, pl.LightningDataModule, list[pl.Callback]]
# builder(cfg: RootConfig, encoder, tokenizer, init_from: Path | None) -> StageParts; init_from is
# the export the stage starts from, None for a stage that starts from model.*
StageBuilder = Callable[..., StageParts]


@dataclass(frozen=True)
class StageSpec:
    name: str
    build: StageBuilder
    data: tuple[str, ...]  # the `data.*` configs its result depends on (NEE and FET: anchors, gazetteer)
    config: type[StageConfig]  # its `stages.<name>` dataclass
    after: str | None  # the stage before it in the curriculum order; None: it starts from model.*


_SPECS: dict[str, StageSpec] = {}
_ADDED_CONFIGS: set[str] = set()  # stages whose config this registry added to the schema


def register_stage(
    name: str,
    build: StageBuilder,
    data: tuple[str, ...],
    config: type[StageConfig] | None = None,
    after: str | None = None,
) -> StageSpec:
    """Register a stage's recipe. A stage declared in StagesConfig takes its config and place from
    there; any other brings `config` (a StageConfig subclass) and continues the chain from `after`,
    the last stage (cofee.config.add_stage_config)."""
    if name in _SPECS:
        raise ValueError(f"stage {name!r} has a recipe already")
    unknown = [d for d in data if d not in {f.name for f in dataclasses.fields(DataConfig)}]
    if unknown:
        raise ValueError(f"stage {name!r}: no data config {', '.join(unknown)} (data.* keys)")
    if config is not None:
        add_stage_config(name, config, after)
        _ADDED_CONFIGS.add(name)
    elif name not in known_stages():
        raise ValueError(f"stage {name!r} has no config: declare it in StagesConfig or pass config=")
    order = known_stages()
    at = order.index(name)
    parent = order[at - 1] if at else None
    if config is None and after not in (None, parent):
        raise ValueError(f"stage {name!r} continues from {parent!r} in StagesConfig, not {after!r}")
    spec = StageSpec(name, build, tuple(data), type(getattr(stages_schema()(), name)), parent)
    _SPECS[name] = spec
    return spec


def stage_recipe(
    name: str, *, data: tuple[str, ...], config: type[StageConfig] | None = None, after: str | None = None
) -> Callable[[StageBuilder], StageBuilder]:
    """Decorate a builder to register it as the recipe of stage `name` (see register_stage)."""

    def decorate(build: StageBuilder) -> StageBuilder:
        register_stage(name, build, data, config, after)
        return build

    return decorate


def unregister_stage(name: str) -> None:
    """Remove a stage's recipe, and its config when registering added it (tests, notebooks)."""
    del _SPECS[name]
    if name in _ADDED_CONFIGS:
        _ADDED_CONFIGS.discard(name)
        remove_stage_config(name)


def stage_spec(name: str) -> StageSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ConfigError(
            f"stages.{name}", "this stage has a config but no recipe (import the module that registers it)"
        ) from None


def stage_specs() -> list[StageSpec]:
    """Every stage with a recipe, in curriculum order."""
    return [_SPECS[name] for name in known_stages() if name in _SPECS]


class _Builders(MutableMapping):
    """Each stage's builder by name; setting one replaces that recipe's builder (the GPU benchmark
    wraps them with a timing callback)."""

    def __getitem__(self, name: str) -> StageBuilder:
        return stage_spec(name).build

    def __setitem__(self, name: str, build: StageBuilder) -> None:
        _SPECS[name] = dataclasses.replace(stage_spec(name), build=build)

    def __delitem__(self, name: str) -> None:
        raise TypeError("unregister_stage(name) removes a stage")

    def __iter__(self) -> Iterator[str]:
        return (spec.name for spec in stage_specs())

    def __len__(self) -> int:
        return len(_SPECS)


STAGE_BUILDERS: MutableMapping[str, StageBuilder] = _Builders()
