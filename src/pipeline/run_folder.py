"""Run folders of `cofee-pretrain`, and `resume=<run folder>`.

A run folder (`outputs/<run_name>`, `paths.output_dir`) holds one folder per stage and, written by
Hydra when the run starts, `.hydra/config.yaml` (the composed config, interpolations kept),
`.hydra/overrides.yaml` and `.hydra/hydra.yaml`. `cofee-pretrain resume=<folder>` continues that run
with that config wherever it was started: Hydra's job goes to the run folder itself (its log is
appended to), writes no `.hydra/` there (the saved config stays the one the run started with), and
`paths.output_dir` becomes the folder. Overrides given with `resume=` change the machine, not the
run: `trainer=`/`logger=` groups and `key=value` overrides apply on top of the saved config (a
changed setting of a started stage is still refused by name, `cofee.pipeline.curriculum.check_stage_inputs`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cofee.utils.errors import ConfigError

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
HYDRA_SETTINGS = Path(".hydra") / "hydra.yaml"
GROUPS_WITH_RESUME = ("trainer", "logger")  # config groups that may change when a run is resumed


def is_run_folder(folder: str | Path | None) -> bool:
    return bool(folder) and (Path(folder) / HYDRA_CONFIG).is_file()


def _run_dir(resume: str | None, output_dir: str) -> str:
    """hydra.run.dir: the resumed run folder, else `paths.output_dir`."""
    return str(resume) if is_run_folder(resume) else str(output_dir)


def launched_rank() -> int:
    """The global rank torchrun (RANK) or SLURM (SLURM_PROCID) gave this process; 0 otherwise
    (Lightning's own launcher starts its workers with hydra.output_subdir=null)."""
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)


def _hydra_subdir(resume: str | None) -> str | None:
    """hydra.output_subdir: `.hydra` (written by rank 0 only), or nothing for a resumed run (its
    saved config stays)."""
    return None if resume or launched_rank() != 0 else ".hydra"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("cofee.run_dir", _run_dir, replace=True)
    OmegaConf.register_new_resolver("cofee.hydra_subdir", _hydra_subdir, replace=True)


def load_run_config(folder: str | Path) -> DictConfig:
    """The config a run folder was started with, or a ConfigError naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("resume", f"{folder} does not exist")
    if not is_run_folder(folder):
        raise ConfigError(
            "resume",
            f"{folder} is not a run folder of cofee-pretrain (no {HYDRA_CONFIG}); give outputs/<run_name> "
            "of a run started with this version",
        )
    saved = OmegaConf.load(folder / HYDRA_CONFIG)
    if not isinstance(saved, DictConfig) or "curriculum" not in saved or "stages" not in saved:
        raise ConfigError("resume", f"{folder / HYDRA_CONFIG} is not the config of a cofee-pretrain run")
    return saved


def _is_group(name: str) -> bool:
    return (resources.files("cofee.conf") / name).is_dir()


def resumed_config(composed: DictConfig, overrides: list[str]) -> DictConfig:
    """The saved config of the run folder `composed.resume`, with `overrides` (the command line's,
    as Hydra recorded them) applied: groups in GROUPS_WITH_RESUME and plain keys, taken from
    `composed` (where Hydra already applied them); any other group is refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    folder = Path(str(composed.resume))
    saved = load_run_config(folder)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key == "resume" or override.is_hydra_override():
            continue
        if override.package is not None or (_is_group(key) and key not in GROUPS_WITH_RESUME):
            raise ConfigError(
                "resume",
                f"'{override.input_line}' changes the config group {key}, and a resumed run keeps its "
                f"own config; with resume= only {', '.join(GROUPS_WITH_RESUME)} groups and key=value "
                "overrides apply",
            )
        if override.is_delete():
            OmegaConf.update(saved, key, None, force_add=True)
        else:
            OmegaConf.update(saved, key, OmegaConf.select(composed, key), merge=False, force_add=True)
    _anchor_root(saved, folder)
    saved.paths.output_dir = str(folder.resolve())
    saved.resume = str(folder)
    return saved


def _anchor_root(saved: DictConfig, folder: Path) -> None:
    """A relative `paths.root` meant the directory the run was started from: keep it so when the
    run is resumed from elsewhere (and that directory exists here)."""
    root = OmegaConf.select(saved, "paths.root", default=None)
    if root is None or Path(str(root)).is_absolute() or not (folder / HYDRA_SETTINGS).is_file():
        return
    started = OmegaConf.select(OmegaConf.load(folder / HYDRA_SETTINGS), "hydra.runtime.cwd", default=None)
    if started and Path(started).is_dir() and Path(started).resolve() != Path.cwd().resolve():
        saved.paths.root = str(Path(started) / str(root))
