import pytest
from omegaconf import OmegaConf

from cofee.config import validate
from cofee.utils.errors import ConfigError
from tests.support import run_cli


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
    cfg = OmegaConf.create(OmegaConf.to_container(compose_cfg()))  # untyped, as a YAML file holds it
    cfg.stages.esi.learning_rate = 0.1
    with pytest.raises(ConfigError, match="stages.esi.learning_rate"):
        validate(cfg)


def test_cli_rejects_wrong_key_and_value_at_start_up(tmp_path):
    def run(*overrides):
        return run_cli("pretrain", f"paths.root={tmp_path}", *overrides, timeout=120)

    wrong_key = run("stages.esi.lrate=1")
    assert wrong_key.returncode != 0 and "stages.esi.lrate" in wrong_key.stderr
    wrong_value = run("stages.esi.max_epochs=ten")
    assert wrong_value.returncode == 2
    error_lines = [line for line in wrong_value.stderr.splitlines() if "error" in line]
    assert error_lines == [error_lines[0]] and "stages.esi.max_epochs" in error_lines[0]
    assert not (tmp_path / "outputs" / "default" / "esi").exists()


def test_finetune_and_study_configs_validate(tmp_path):
    from hydra import compose, initialize_config_module

    from cofee.cli.entry import check_overrides
    from cofee.config import FinetuneRootConfig, validate_finetune, validate_study

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        finetune = validate_finetune(compose(config_name="finetune", overrides=["kshot=4", "model=tiny"]))
        study = validate_study(compose(config_name="study"))
        with pytest.raises(ConfigError, match="'fraction'"):
            validate_finetune(compose(config_name="finetune", overrides=["fraction=2"]))
        with pytest.raises(ConfigError, match="'finetune.scheme'"):
            check_overrides(["finetune.scheme=BIOZ"], FinetuneRootConfig)
    assert finetune.kshot == 4 and finetune.data.split_dir == "./data/gold/wnut16"
    assert study.variants  # which ones is conf/study.yaml's business, checked below whatever they are


def test_every_production_study_variant_composes_into_a_valid_pretrain_config():
    """A typo in a variant of conf/study.yaml must fail here, not hours into `make study`; and variants
    sharing a run folder must agree on what they train in common. Holds for any variant list."""
    from pathlib import Path

    from hydra import compose, initialize_config_module

    from cofee.config import to_plain, validate_study
    from cofee.experiments.study import variant_root

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name="study"))
        roots = {}
        for name, overrides in study.variants.items():
            if overrides is not None:
                try:
                    roots[name] = variant_root(study, name, overrides)
                except ConfigError as exc:
                    pytest.fail(f"conf/study.yaml variant {name}: {exc}")
    # Variants naming the same run folder train the stages they have in common once, so everything but
    # the curriculum's stages and the settings of a stage only one of them trains must be the same.
    by_folder: dict[str, list[str]] = {}
    for name, root in roots.items():
        by_folder.setdefault(root.paths.output_dir, []).append(name)
    for folder, names in by_folder.items():
        first, *others = names
        for other in others:
            common = set(roots[first].curriculum.stages) & set(roots[other].curriculum.stages)
            a, b = (_shared_settings(to_plain(roots[n]), common) for n in (first, other))
            differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            assert not differ, f"variants {first} and {other} share {folder} but differ in {differ}"
    # no variant pre-trains on the gold dev or test split (the in-domain text is train only)
    held_out = {
        (Path(study.data.split_dir) / name).resolve()
        for name in ("dev.conll", "test.conll", "dev.txt", "test.txt")
    }
    for name, root in roots.items():
        for key, value in _leaves(to_plain(root)):
            if isinstance(value, str) and value and Path(value).resolve() in held_out:
                pytest.fail(f"conf/study.yaml variant {name}: {key}={value} is gold held-out text")


def _shared_settings(plain: dict, common_stages: set) -> dict:
    plain["curriculum"].pop("stages")
    plain["stages"] = {k: v for k, v in plain["stages"].items() if k in common_stages}
    return dict(_leaves(plain))


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, tree


def test_the_default_pretraining_is_the_measured_esi_long_full(compose_cfg):
    """The default curriculum (two epochs of ESI) must pre-train exactly what the study measured as
    `esi_long_full`, or the figures that made it the default are not its own."""
    from hydra import compose, initialize_config_module

    from cofee.config import to_plain, validate_study
    from cofee.experiments.study import variant_root

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name="study_esi_full"))
        measured = to_plain(variant_root(study, "esi_long_full", study.variants["esi_long_full"]))
        reference = to_plain(variant_root(study, "esi_nee_fet", study.variants["esi_nee_fet"]))
    default = to_plain(validate(compose_cfg([f"paths.root={study.paths.root}"])))
    for cfg in (measured, reference, default):
        del cfg["run_name"], cfg["paths"]
    assert default == measured
    assert default != reference  # the studies' one-epoch reference
