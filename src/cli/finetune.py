"""`cofee-finetune`: fine-tune on gold NER, evaluate on dev/test, export a transformers model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cofee.config import validate_finetune

from .common import user_errors

log = logging.getLogger("cofee-finetune")


@hydra.main(version_base="1.3", config_path="pkg://cofee.conf", config_name="finetune")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-finetune"):
        root = validate_finetune(cfg)
        from cofee.data_modules.gold_ner import splits_from_config
        from cofee.finetune import export_finetuned, finetune

        splits = splits_from_config(root.data, root.finetune.scheme)
        result = finetune(
            splits,
            root.finetune,
            root.init_from,
            root.model,
            root.fraction,
            root.kshot,
            root.seed,
            trainer_kwargs={"accelerator": root.trainer.accelerator, "devices": 1},
        )
        summary = export_finetuned(result, root, Path(root.paths.output_dir))
        log.info("test: %s", json.dumps(summary["test"]["micro"]))


if __name__ == "__main__":
    main()
