"""`cofee-denoising`: NEE per noise strategy against the gazetteer that labelled it (conf/denoising.yaml)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import validate_denoising
from cofee.utils.errors import user_errors

log = logging.getLogger("cofee-denoising")


@hydra_command("denoising", "cofee-denoising")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-denoising"):
        root = validate_denoising(cfg)
        from cofee.experiments.denoising import run_denoising  # heavy imports after the config is known good

        for row in run_denoising(root, root.gold, root.denoising):
            log.info(
                "%s %s seed %s: F1 %.3f",
                row["system"],
                row["strategy"] or "",
                row["seed"] or "",
                row["micro"]["f1"],
            )


if __name__ == "__main__":
    main()
