"""Each default is written once, in cofee.config: a YAML value that repeats a schema default, or (in a
file loaded by default) differs from it, must say why in a comment on its line."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cofee.cli.entry import check_overrides, command_line_overrides
from cofee.config import (
    ROOT_SCHEMAS,
    FinetuneConfig,
    RootConfig,
    StudyConfig,
    bounded,
    check_bounds,
    to_plain,
    validate,
)
from cofee.utils.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"
ROOTS = {f"{name.removesuffix('_schema')}.yaml": schema for name, schema in ROOT_SCHEMAS.items()}
ROOTS["build.yaml"] = RootConfig  # the pretrain config without a run folder (cofee-build-*)
# options the root files select by default; the other options are alternatives a user picks
DEFAULT_OPTIONS = {"model/minilm.yaml", "trainer/cpu.yaml", "logger/csv.yaml", "logger/none.yaml"}
NOT_SCHEMA = {"mappings", "sweep"}  # data files and W&B sweep specs, not config values
MISSING = object()


def yaml_leaves(text: str):
    """(line number, dotted key, value, has comment) for each `key: value` line of a block-style YAML
    file, outside the `defaults:` list and the `hydra:` block."""
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        body = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not body.strip() or body.lstrip().startswith("-"):
            continue
        indent = len(body) - len(body.lstrip())
        key, _, value = body.strip().partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        if not value.strip():
            stack.append((indent, key))
            continue
        if path.split(".")[0] in ("defaults", "hydra"):
            continue
        yield number, path, yaml.safe_load(value), "#" in line


def schema_default(schema: type, key: str):
    node = OmegaConf.structured(schema)
    try:
        value = OmegaConf.select(node, key, default=MISSING)
    except Exception:
        return MISSING
    return OmegaConf.to_container(value, enum_to_str=True) if OmegaConf.is_config(value) else value


def unexplained_values(relative: str, text: str, schema: type, package: str, loaded_by_default: bool):
    found = []
    for number, key, value, commented in yaml_leaves(text):
        full = f"{package}.{key}" if package else key
        default = schema_default(schema, full)
        if default is MISSING or commented:
            continue
        if value == default:
            found.append(f"conf/{relative}:{number}: {full}: {value!r} repeats the schema default")
        elif loaded_by_default:
            found.append(
                f"conf/{relative}:{number}: {full}: {value!r} overrides the default {default!r} unexplained"
            )
    return found


def root_schema(relative: str, text: str) -> type:
    """The schema of a root config file: its own, or that of the root it extends, directly
    (study_quick.yaml lists `- study` first in its defaults) or through another root config file
    (study_esi_full.yaml extends study_esi.yaml)."""
    if relative in ROOTS:
        return ROOTS[relative]
    for base in re.findall(r"^\s*-\s*(\w+)\s*$", text, flags=re.MULTILINE):
        if f"{base}.yaml" in ROOTS:
            return ROOTS[f"{base}.yaml"]
        if base != relative.removesuffix(".yaml") and (CONF / f"{base}.yaml").is_file():
            return root_schema(f"{base}.yaml", (CONF / f"{base}.yaml").read_text())
    raise AssertionError(f"conf/{relative}: a root config that extends no known root")


def conf_files():
    for path in sorted(CONF.rglob("*.yaml")):
        relative = path.relative_to(CONF).as_posix()
        if relative.split("/")[0] in NOT_SCHEMA:
            continue
        text = path.read_text(encoding="utf-8")
        if "/" not in relative:
            yield relative, text, root_schema(relative, text), "", True
        else:
            group = relative.split("/")[0]
            package = "" if "@package _global_" in text else group
            yield relative, text, RootConfig, package, relative in DEFAULT_OPTIONS


def test_no_yaml_value_repeats_or_contradicts_the_schema_unexplained():
    found = [f for args in conf_files() for f in unexplained_values(*args)]
    assert found == []


def test_the_check_flags_a_repeat_and_an_unexplained_override():
    text = "seed: 13\nrun_name: mine  # why: a reason\nstages:\n  esi:\n    max_epochs: 4\n"
    found = unexplained_values("x.yaml", text, RootConfig, "", True)
    assert [f.split(": ", 2)[1] for f in found] == ["seed", "stages.esi.max_epochs"]
    assert "repeats" in found[0] and "overrides the default 2" in found[1]


def test_every_root_composes_from_its_schema():
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        for name, schema in ROOTS.items():
            cfg = compose(config_name=name[:-5])
            assert OmegaConf.get_type(cfg) is schema, name


def test_fet_extends_nee_and_the_study_shares_the_finetune_recipe():
    nee, fet = to_plain(RootConfig().stages.nee), to_plain(RootConfig().stages.fet)
    own = {"name", "max_epochs"}  # FET's own values of NEE's keys; the rest is inherited, not copied
    assert {k: fet[k] for k in nee if k not in own} == {k: v for k, v in nee.items() if k not in own}
    study, finetune = to_plain(StudyConfig().finetune), to_plain(FinetuneConfig())
    assert {**study, "max_steps": None} == {**finetune, "max_steps": None}


def test_the_upgrade_check_knows_the_defaults_a_run_composes(compose_cfg):
    from cofee.pipeline.curriculum import input_defaults

    composed = validate(compose_cfg())
    for stage in ("esi", "nee", "fet"):
        defaults = input_defaults(stage)
        assert defaults["stages"][stage] == to_plain(getattr(composed.stages, stage))
        assert defaults["model"] == to_plain(composed.model)


@dataclasses.dataclass
class _Ranged:
    rate: float = bounded(0.5, gt=0, le=1)
    sizes: list = bounded([1, 2], ge=1)
    optional: int | None = bounded(None, ge=0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate", 0.0, "lie in (0, 1], got 0.0"),
        ("rate", 2, "got 2"),
        ("sizes", [1, 0], "each value must be at least 1"),
    ],
)
def test_bounds_name_the_key_and_the_range(field, value, message):
    node = _Ranged(**{field: value})
    with pytest.raises(ConfigError, match=f"'outer.{field}'") as info:
        check_bounds(node, "outer")
    assert message in str(info.value)
    check_bounds(_Ranged(), "outer")  # the defaults and a null pass


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.esi.optim.lrr=1", "did you mean stages.esi.optim.lr?"),
        ("data.anchorz.dump=x", "no such key under 'data'; did you mean data.anchors?"),
        ("stages.esi.scheme=BIOX", "expected one of [BIO, BIOES, IOB1, BMES]"),
        ("seed=abc", "could not be converted to Integer"),
    ],
)
def test_override_mistakes_are_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        check_overrides([override], RootConfig)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert f"'{override.split('=')[0]}'" in str(info.value)


def test_group_choices_free_form_keys_and_hydra_flags_pass_the_override_check():
    check_overrides(["model=tiny", "experiment=smoke", "+extra=1", "model.tiny.hidden_size=8"], RootConfig)
    check_overrides(["hydra.verbose=true", "stages.esi.optim.lr=1e-4"], RootConfig)
    assert command_line_overrides(["-m", "seed=1", "--cfg", "job", "a=b"]) == ["seed=1", "a=b"]
    assert command_line_overrides(["--config-name", "other", "seed=1"]) is None
