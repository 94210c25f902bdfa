"""`cofee-pretrain`: run the curriculum (Hydra overrides welcome).

`stage=all` every stage, `stage=nee` one stage, else the stages in `curriculum.stages`; a stage
interrupted earlier resumes from its `last.ckpt`, a finished one is skipped.
`cofee-pretrain resume=outputs/<run>` continues a run folder with the config it was started with
(`trainer=`, `logger=` and key=value overrides apply on top, e.g. another number of GPUs).
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import validate
from cofee.utils.errors import user_errors

log = logging.getLogger("cofee-pretrain")


@hydra_command("pretrain", "cofee-pretrain")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-pretrain"):
        if cfg.get("resume"):
            from hydra.core.hydra_config import HydraConfig

            from cofee.pipeline.run_folder import resumed_config

            cfg = resumed_config(cfg, list(HydraConfig.get().overrides.task))
            log.info("resuming the run in %s with its saved config", cfg.paths.output_dir)
        root = validate(cfg)
        from cofee.pipeline.curriculum import run_curriculum  # heavy imports after the config is known good

        results = run_curriculum(root)
        for stage, manifest in results.items():
            metrics = {k: v for k, v in manifest.get("metrics", {}).items() if "/val/" in k}
            log.info("%s: %s", stage, json.dumps(metrics))


if __name__ == "__main__":
    main()
