"""`cofee-pretrain`: run the curriculum stages named in `curriculum.stages` (Hydra overrides welcome)."""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from cofee.config import validate

from .common import user_errors

log = logging.getLogger("cofee-pretrain")


@hydra.main(version_base="1.3", config_path="pkg://cofee.conf", config_name="pretrain")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-pretrain"):
        root = validate(cfg)
        from cofee.pretrain import run_curriculum  # heavy imports after the config is known good

        results = run_curriculum(root)
        for stage, manifest in results.items():
            metrics = {k: v for k, v in manifest.get("metrics", {}).items() if "/val/" in k}
            log.info("%s: %s", stage, json.dumps(metrics))


if __name__ == "__main__":
    main()
