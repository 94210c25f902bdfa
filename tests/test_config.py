import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from cofee.config import validate
from cofee.errors import ConfigError


def test_default_config_composes_and_validates(compose_cfg):
    root = validate(compose_cfg())
    assert root.model.name_or_path == "packaged:minilm"
    assert root.curriculum.stages == ["esi", "nee", "fet"]
    assert root.data.anchors.corpus_dir == "./data/anchors"
    assert root.stages.esi.optim.lr == pytest.approx(1e-5)


def test_groups_compose(compose_cfg):
    root = validate(compose_cfg(["model=tiny", "trainer=ddp", "logger=none", "stages.esi.scheme=BIOES"]))
    assert root.model.tiny["hidden_size"] == 32 and root.model.name_or_path is None
    assert root.trainer.strategy == "ddp" and root.trainer.devices == "auto" and root.trainer.num_nodes == 1
    assert root.logger.kind == "none" and root.stages.esi.scheme == "BIOES"


def test_every_experiment_file_validates(compose_cfg):
    from importlib.resources import files

    names = sorted(
        p.name[:-5] for p in (files("cofee.conf") / "experiment").iterdir() if p.name.endswith(".yaml")
    )
    assert names
    for name in names:
        validate(compose_cfg([f"experiment={name}"]))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("stages.esi.batch_size=many", "stages.esi.batch_size"),
        ("stages.esi.scheme=BIOX", "stages.esi.scheme"),
        ("stages.esi.optim.lr=-1", "stages.esi.optim.lr"),
        ("logger.kind=tensorboardx", "logger.kind"),
        ("curriculum.stages=[esi,xyz]", "curriculum.stages"),
        ("stages.nee.type_balance=-0.5", "stages.nee.type_balance"),
    ],
)
def test_wrong_values_name_the_key(compose_cfg, override, key):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg([override]))
    assert f"'{key}'" in str(info.value)


def test_unknown_key_in_a_yaml_is_named(compose_cfg):
    cfg = compose_cfg()
    OmegaConf.set_struct(cfg, False)
    cfg.stages.esi.learning_rate = 0.1
    with pytest.raises(ConfigError, match="stages.esi.learning_rate"):
        validate(cfg)


def test_cli_rejects_wrong_key_and_value_at_start_up(tmp_path):
    def run(*overrides):
        return subprocess.run(
            [sys.executable, "-m", "cofee.cli.pretrain", f"paths.root={tmp_path}", *overrides],
            capture_output=True,
            text=True,
            timeout=120,
        )

    wrong_key = run("stages.esi.lrate=1")
    assert wrong_key.returncode != 0 and "stages.esi.lrate" in wrong_key.stderr
    wrong_value = run("stages.esi.max_epochs=ten")
    assert wrong_value.returncode == 2
    error_lines = [line for line in wrong_value.stderr.splitlines() if "error" in line]
    assert error_lines == [error_lines[0]] and "stages.esi.max_epochs" in error_lines[0]
    assert not (tmp_path / "outputs" / "default" / "esi").exists()


def test_finetune_and_study_configs_validate(tmp_path):
    from hydra import compose, initialize_config_module

    from cofee.config import validate_finetune, validate_study

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        finetune = validate_finetune(compose(config_name="finetune", overrides=["kshot=4", "model=tiny"]))
        study = validate_study(compose(config_name="study"))
        with pytest.raises(ConfigError, match="'fraction'"):
            validate_finetune(compose(config_name="finetune", overrides=["fraction=2"]))
        with pytest.raises(ConfigError, match="'finetune.scheme'"):
            validate_finetune(compose(config_name="finetune", overrides=["finetune.scheme=BIOZ"]))
    assert finetune.kshot == 4 and finetune.data.split_dir == "./data/gold/wnut16"
    assert (
        set(study.variants)
        == {"baseline", "esi", "esi_nee", "esi_nee_fet", "esi_nee_fet_indomain"}
        | {"esi_nee_fet_nocluster", "esi_nee_fet_cluster10x"}
        and study.variants["baseline"] is None
    )
