"""`cofee-finetune`: fine-tune on gold NER, evaluate on dev/test, export a transformers model.

Everything a user gives is checked before training, each mistake one line with exit status 2: the
output folder (writable, before Hydra writes its config there), the config, every gold split (present,
non-empty, with entities), the starting model folder, and the free space for the export.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import validate_finetune
from cofee.utils.errors import ConfigError, user_errors

log = logging.getLogger("cofee-finetune")
PROGRAM = "cofee-finetune"


def _check_run_folder(overrides: list[str]) -> None:
    """The run folder (hydra.run.dir) must be writable before Hydra writes .hydra-pending/ there. A
    config Hydra cannot compose is left to Hydra, which reports it when it runs."""
    try:
        from hydra import compose, initialize_config_module

        with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
            folder = Path(
                str(compose("finetune", overrides=overrides, return_hydra_config=True).hydra.run.dir)
            )
    except Exception:  # noqa: BLE001
        return
    from cofee.pipeline.finetune import check_output_dir

    check_output_dir(folder)


@hydra_command("finetune", PROGRAM, before=_check_run_folder)
def main(cfg: DictConfig) -> None:
    try:
        with user_errors(PROGRAM):
            _finetune(cfg)
    except BaseException:
        from omegaconf import OmegaConf

        from cofee.pipeline.finetune import discard_pending

        out_dir = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False)
        if out_dir:
            discard_pending(out_dir)
        raise


def _finetune(cfg: DictConfig) -> None:
    root = validate_finetune(cfg)
    from cofee.config import to_plain
    from cofee.data.gold.loading import splits_from_config

    out_dir = Path(root.paths.output_dir)
    splits = splits_from_config(root.data, root.finetune.scheme)  # every split checked, no torch yet
    if root.init_from is not None:
        from cofee.models.encoder import check_model_folder

        if not Path(root.init_from).is_dir():
            raise ConfigError("init_from", f"'{root.init_from}' is not a folder")
        check_model_folder(root.init_from)
    from cofee.pipeline.finetune import check_output_dir, export_finetuned, finetune
    from cofee.pipeline.loggers import finish_logger, log_export, log_summary, make_logger

    check_output_dir(out_dir)
    logger = make_logger(
        root.logger,
        out_dir,
        name=root.run_name,
        group=root.run_name,
        job_type="finetune",
        config=to_plain(root),
    )
    try:
        result = finetune(
            splits,
            root.finetune,
            root.init_from,
            root.model,
            root.fraction,
            root.kshot,
            root.seed,
            trainer_kwargs={
                "accelerator": root.trainer.accelerator,
                "devices": 1,
                "logger": logger,
                "log_every_n_steps": root.trainer.log_every_n_steps,
            },
            out_dir=out_dir,
        )
        summary = export_finetuned(result, root, out_dir)
        # the results.json figures as the run's summary: a W&B sweep's metric is read from here
        log_summary(logger, {k: v for k, v in summary.items() if k != "run_name"})
        log_export(
            logger, out_dir / "model", "model", f"{root.run_name}-model", summary, root.logger.log_model
        )
    except BaseException:
        finish_logger(logger, failed=True)
        raise
    finish_logger(logger)
    log.info("test: %s", json.dumps(summary["test"]["micro"]))


if __name__ == "__main__":
    main()
