"""`cofee-build-cache`: build the token caches a curriculum reads, in one process, before a multi-GPU job.

It takes the same config and overrides as `cofee-pretrain` and prints each cache folder and whether
it was built or already there; the work is `cofee.pipeline.token_caches.build_caches`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import RootConfig, validate
from cofee.utils.errors import user_errors

PROGRAM = "cofee-build-cache"


@hydra_command("build", PROGRAM, schema=RootConfig)
def main(cfg: DictConfig) -> None:
    with user_errors(PROGRAM):
        if cfg.get("resume"):  # the caches of a run folder's saved config
            from hydra.core.hydra_config import HydraConfig

            from cofee.pipeline.run_folder import resumed_config

            cfg = resumed_config(cfg, list(HydraConfig.get().overrides.task))
        from cofee.pipeline.token_caches import build_caches

        build_caches(validate(cfg))


if __name__ == "__main__":
    main()
