"""The Hydra console scripts' shared entry: command-line overrides are checked against the schema first.

Hydra would report a misspelt key or a wrong value after composing every YAML file, in several lines,
with exit status 1. `check_overrides` does it before any YAML is read: one line naming the key (and
the nearest existing keys), exit status 2, like every other user error.
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Callable, Sequence

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cofee.config import ROOT_SCHEMAS
from cofee.utils.errors import ConfigError, user_errors

GROUPS = ("model", "trainer", "logger", "experiment")  # the config groups under conf/
# Hydra flags that take the next argument as their value; --config-name/-cn switch the root config,
# after which the schema of this command no longer applies (the overrides are left to Hydra)
VALUE_FLAGS = {"--config-path", "-cp", "--config-dir", "-cd", "--cfg", "-c", "--package", "-p", "--info"}
ROOT_SWITCHES = {"--config-name", "-cn"}
MISSING = object()


def command_line_overrides(argv: Sequence[str]) -> list[str] | None:
    """The `key=value` arguments of a Hydra command line; None when it names another root config."""
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in ROOT_SWITCHES:
            return None
        elif arg in VALUE_FLAGS:
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides


def _free_form(schema_cfg: DictConfig, key: str) -> bool:
    """True when a prefix of `key` is a plain dict field (`model.tiny`, `variants`): any subkey goes."""
    node = schema_cfg
    for part in key.split(".")[:-1]:
        node = node._get_node(part, validate_access=False) if isinstance(node, DictConfig) else None
        if not isinstance(node, DictConfig):
            return False
        if node._metadata.object_type in (None, dict):
            return True
    return False


def _select(schema_cfg: DictConfig, key: str):
    """The node at `key`, or MISSING where the schema has no such key."""
    try:
        return OmegaConf.select(schema_cfg, key, default=MISSING) if key else schema_cfg
    except OmegaConfBaseException:  # a missing key below a typed node
        return MISSING


def _unknown_key(schema_cfg: DictConfig, key: str) -> ConfigError:
    parent, _, leaf = key.rpartition(".")
    while parent and not isinstance(_select(schema_cfg, parent), DictConfig):
        parent, _, leaf = parent.rpartition(".")
    node = _select(schema_cfg, parent)
    close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(f'{parent}.{c}' if parent else c for c in close)}?" if close else ""
    where = f" under '{parent}'" if parent and parent != key.rpartition(".")[0] else ""
    return ConfigError(key, f"no such key{where}{hint}")


def check_overrides(overrides: Sequence[str], schema: type) -> None:
    """`ConfigError` for the first override whose key the schema lacks or whose value does not fit it.
    Group choices (`model=tiny`), `+key`, `~key` and `hydra.*` are Hydra's to check."""
    schema_cfg = OmegaConf.structured(schema)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if (
            override.is_hydra_override()
            or override.is_add()
            or override.is_force_add()
            or override.is_delete()
        ):
            continue
        if key in GROUPS and isinstance(override.value(), str):
            continue
        if _select(schema_cfg, key) is MISSING:
            if _free_form(schema_cfg, key):
                continue
            raise _unknown_key(schema_cfg, key)
        if override.is_sweep_override():  # -m a=1,2: each choice; ranges and intervals are Hydra's
            try:
                values = list(override.sweep_iterator())
            except Exception:
                values = []
        else:
            values = [override.value()]
        for value in values:  # set on the schema itself: each key is checked once, against its type
            try:
                OmegaConf.update(schema_cfg, key, value, merge=True)
            except OmegaConfBaseException as exc:
                raise ConfigError(key, str(exc).splitlines()[0]) from None


def hydra_command(
    config_name: str,
    program: str,
    schema: type | None = None,
    before: Callable[[list[str]], None] | None = None,
) -> Callable:
    """`@hydra.main` for a cofee command: its overrides are checked against the root config's schema
    (`schema`, else `<config_name>_schema`) first, then `before(overrides)` runs (a check that must
    come before Hydra writes anything); a mistake is one line on stderr, exit status 2."""
    schema = schema or ROOT_SCHEMAS[f"{config_name}_schema"]

    def decorate(task: Callable[[DictConfig], None]) -> Callable[[], None]:
        hydra_task = hydra.main(version_base="1.3", config_path="pkg://cofee.conf", config_name=config_name)(
            task
        )

        @functools.wraps(task)
        def main() -> None:
            overrides = command_line_overrides(sys.argv[1:])
            if overrides is not None:
                with user_errors(program):
                    check_overrides(overrides, schema)
                    if before is not None and not {"-m", "--multirun"} & set(sys.argv[1:]):
                        before(overrides)
            hydra_task()

        return main

    return decorate
