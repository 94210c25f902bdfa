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
        from cofee.data_modules.gold_ner import load_gold_splits
        from cofee.finetune import export_finetuned, finetune

        data = root.data
        splits = load_gold_splits(
            data.source,
            data.split_dir,
            root.finetune.scheme,
            data.split_seed,
            data.train_file,
            data.dev_file,
            data.test_file,
        )
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
