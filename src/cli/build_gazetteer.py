"""`cofee-build-gazetteer`: build the typed gazetteer of `data.gazetteer` and label the corpus with it.

Builds the anchor corpus first when it is the corpus to label (skipped when up to date, as with
`cofee-build-anchors`), then the gazetteer, then the labelled corpus; each step is skipped when its
inputs and settings are unchanged. Prints the per-type tables at the end.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from cofee.config import validate

from .common import user_errors

log = logging.getLogger("cofee-build-gazetteer")


@hydra.main(version_base="1.3", config_path="pkg://cofee.conf", config_name="pretrain")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-build-gazetteer"):
        data = validate(cfg).data
        anchors, gazetteer = data.anchors, data.gazetteer
        from cofee.gazetteer.build import build_gazetteer
        from cofee.gazetteer.label import label_corpus
        from cofee.gazetteer.report import gazetteer_tables
        from cofee.wiki.build_anchors import build_anchor_corpus, default_dump_path

        dump = None
        if gazetteer.raw_text is None or gazetteer.build.wikipedia:
            dump = anchors.dump or default_dump_path()
        if gazetteer.raw_text is None:
            build_anchor_corpus(dump, anchors.corpus_dir, anchors.build, num_workers=anchors.build_workers)
        build_gazetteer(
            gazetteer.build,
            gazetteer.gazetteer_dir,
            dump_path=dump if gazetteer.build.wikipedia else None,
            user_lists_dir=gazetteer.user_lists_dir,
            types=list(gazetteer.types),
        )
        label_corpus(
            gazetteer.gazetteer_dir,
            gazetteer.labelled_dir,
            gazetteer.match,
            anchors_dir=anchors.corpus_dir,
            raw_text=gazetteer.raw_text,
            shard_size=gazetteer.shard_size,
        )
        print(gazetteer_tables(gazetteer.gazetteer_dir, gazetteer.labelled_dir))


if __name__ == "__main__":
    main()
