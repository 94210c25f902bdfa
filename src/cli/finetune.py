"""`cofee-finetune`: fine-tune on gold NER, evaluate on dev/test, export a transformers model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import validate_finetune
from cofee.utils.errors import user_errors

log = logging.getLogger("cofee-finetune")


@hydra_command("finetune", "cofee-finetune")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-finetune"):
        root = validate_finetune(cfg)
        from cofee.config import to_plain
        from cofee.data_modules.gold_ner import splits_from_config
        from cofee.pipeline.finetune import export_finetuned, finetune
        from cofee.pipeline.loggers import finish_logger, log_export, log_summary, make_logger

        out_dir = Path(root.paths.output_dir)
        splits = splits_from_config(root.data, root.finetune.scheme)
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
