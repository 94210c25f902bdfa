"""`cofee-build-anchors`: build (or find up to date) the Wikipedia anchor corpus of `data.anchors`."""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import RootConfig, validate
from cofee.utils.errors import user_errors

log = logging.getLogger("cofee-build-anchors")


@hydra_command("build", "cofee-build-anchors", schema=RootConfig)
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-build-anchors"):
        data = validate(cfg).data.anchors
        from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path

        manifest = build_anchor_corpus(
            data.dump or default_dump_path(), data.corpus_dir, data.build, num_workers=data.build_workers
        )
        log.info("anchor corpus %s: %s", data.corpus_dir, json.dumps(manifest["counts"]))


if __name__ == "__main__":
    main()
