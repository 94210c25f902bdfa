"""`cofee-build-anchors`: build (or find up to date) the Wikipedia anchor corpus of `data.anchors`."""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from cofee.config import validate

from .common import user_errors

log = logging.getLogger("cofee-build-anchors")


@hydra.main(version_base="1.3", config_path="pkg://cofee.conf", config_name="pretrain")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-build-anchors"):
        data = validate(cfg).data.anchors
        from cofee.wiki.build_anchors import build_anchor_corpus, default_dump_path

        manifest = build_anchor_corpus(
            data.dump or default_dump_path(), data.corpus_dir, data.build, num_workers=data.build_workers
        )
        log.info("anchor corpus %s: %s", data.corpus_dir, json.dumps(manifest["counts"]))


if __name__ == "__main__":
    main()
