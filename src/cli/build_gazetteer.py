"""`cofee-build-gazetteer`: build the typed gazetteer of `data.gazetteer` and label the corpus with it.

Builds the anchor corpus first when it is the corpus to label (skipped when up to date, as with
`cofee-build-anchors`), then the gazetteer, then the labelled corpus; each step is skipped when its
inputs and settings are unchanged. Prints the per-type tables at the end.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import RootConfig, validate
from cofee.utils.errors import user_errors

log = logging.getLogger("cofee-build-gazetteer")


@hydra_command("build", "cofee-build-gazetteer", schema=RootConfig)
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-build-gazetteer"):
        data = validate(cfg).data
        anchors, gazetteer = data.anchors, data.gazetteer
        from cofee.data.gazetteer.pipeline import prepare_labelled_corpus
        from cofee.data.gazetteer.report import gazetteer_tables

        prepare_labelled_corpus(anchors, gazetteer)
        print(gazetteer_tables(gazetteer.gazetteer_dir, gazetteer.labelled_dir))


if __name__ == "__main__":
    main()
