"""The stage registry: the built-in stages, their order, configs and data all come from one place, and
a stage added at run time extends the schema, the validation and the order, and leaves them as they
were when removed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from cofee.config import (
    ESIStageConfig,
    FETStageConfig,
    NEEStageConfig,
    RootConfig,
    StageConfig,
    StagesConfig,
    add_stage_config,
    known_stages,
    remove_stage_config,
    to_plain,
    validate,
)
from cofee.pipeline.curriculum import stage_inputs
from cofee.pipeline.recipes.registry import (
    STAGE_BUILDERS,
    register_stage,
    stage_spec,
    stage_specs,
    unregister_stage,
)
from cofee.utils.errors import ConfigError


@dataclass
class ExtraStageConfig(StageConfig):
    name: str = "extra"
    rounds: int = 2


def _build(*args):
    raise AssertionError("not built in these tests")


@pytest.fixture
def extra_stage():
    register_stage("extra", _build, ("anchors",), ExtraStageConfig, after="fet")
    yield
    unregister_stage("extra")


def test_the_built_in_stages_come_from_the_schema_in_curriculum_order():
    assert known_stages() == tuple(f.name for f in dataclasses.fields(StagesConfig)) == ("esi", "nee", "fet")
    specs = stage_specs()
    assert [s.name for s in specs] == list(known_stages()) == list(STAGE_BUILDERS)
    assert [s.after for s in specs] == [None, "esi", "nee"]
    assert [s.config for s in specs] == [ESIStageConfig, NEEStageConfig, FETStageConfig]
    assert all(spec.config().name == spec.name for spec in specs)  # `stages.<name>.name` is the stage


def test_the_data_a_stage_depends_on_is_what_its_inputs_record(compose_cfg):
    """The data configs in each stage's input hash (unchanged, so finished runs stay finished)."""
    cfg = validate(compose_cfg(["experiment=smoke"]))
    recorded = {stage: list(stage_inputs(cfg, stage, None)["data"]) for stage in known_stages()}
    assert recorded == {"esi": ["anchors"], "nee": ["anchors", "gazetteer"], "fet": ["anchors", "gazetteer"]}


def test_an_added_stage_extends_schema_validation_and_order(extra_stage, compose_cfg):
    assert known_stages() == ("esi", "nee", "fet", "extra") and stage_spec("extra").after == "fet"
    assert isinstance(RootConfig().stages.extra, ExtraStageConfig)
    cfg = validate(compose_cfg(["curriculum.stages=[esi,extra]", "stages.extra.rounds=5", "stage=extra"]))
    assert cfg.curriculum.stages == ["esi", "extra"] and cfg.stages.extra.rounds == 5
    with pytest.raises(ConfigError, match=r"'stages\.extra\.rounds'.*Integer"):
        compose_cfg(["stages.extra.rounds=many"])
    with pytest.raises(ConfigError, match=r"use \[nee, extra\]"):
        validate(compose_cfg(["curriculum.stages=[extra,nee]"]))
    assert to_plain(cfg.stages.nee) == to_plain(RootConfig().stages.nee)  # the built-ins keep their types


def test_removing_an_added_stage_restores_the_schema(compose_cfg):
    before = OmegaConf.to_yaml(compose_cfg(["experiment=smoke"]))
    register_stage("extra", _build, ("anchors",), ExtraStageConfig, after="fet")
    assert "extra:" in OmegaConf.to_yaml(compose_cfg(["experiment=smoke"]))
    unregister_stage("extra")
    assert OmegaConf.to_yaml(compose_cfg(["experiment=smoke"])) == before
    assert known_stages() == ("esi", "nee", "fet")
    with pytest.raises(ConfigError, match=r"'curriculum\.stages': 'extra' is not one of esi, nee, fet"):
        validate(compose_cfg(["curriculum.stages=[esi,extra]"]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("esi", _build, ("anchors",)), "has a recipe already"),
        (("extra", _build, ("gold",), ExtraStageConfig, "fet"), "no data config gold"),
        (("extra", _build, ("anchors",), ExtraStageConfig, "nee"), "added after the last one, 'fet'"),
        (("other", _build, ("anchors",), ExtraStageConfig, "fet"), "name='other'"),
        (("other", _build, ("anchors",)), "has no config"),
    ],
)
def test_a_bad_registration_is_refused_and_changes_nothing(args, message):
    with pytest.raises(ValueError, match=message):
        register_stage(*args)
    assert known_stages() == ("esi", "nee", "fet") and list(STAGE_BUILDERS) == ["esi", "nee", "fet"]


def test_a_stage_with_a_config_but_no_recipe_is_named_before_any_stage_trains(compose_cfg, tmp_path):
    from cofee.pipeline.curriculum import run_curriculum

    add_stage_config("extra", ExtraStageConfig, "fet")
    try:
        cfg = validate(compose_cfg(["curriculum.stages=[esi,extra]", f"paths.root={tmp_path}"]))
        with pytest.raises(ConfigError, match=r"'stages\.extra'.*no recipe"):
            run_curriculum(cfg)
    finally:
        remove_stage_config("extra")
    assert not (tmp_path / "outputs").exists()


def test_setting_a_builder_wraps_that_stages_recipe():
    original = STAGE_BUILDERS["esi"]
    try:
        STAGE_BUILDERS["esi"] = _build
        assert stage_spec("esi").build is _build and stage_spec("esi").data == ("anchors",)
    finally:
        STAGE_BUILDERS["esi"] = original
    assert stage_spec("esi").build is original
