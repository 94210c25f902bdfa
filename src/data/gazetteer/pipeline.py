"""The stage-2 data chain, in one place for the CLI and the data module: anchor corpus (when it is
labelled), gazetteer, labelled corpus; each step is skipped when its inputs are unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cofee.config import GazetteerDataConfig
from cofee.data.gazetteer.build import build_gazetteer
from cofee.data.gazetteer.label import label_corpus


def prepare_labelled_corpus(anchors, gazetteer: GazetteerDataConfig, progress: bool = True) -> dict[str, Any]:
    """`anchors`: the `data.anchors` config; returns the labelled corpus manifest."""
    from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path

    dump = (
        anchors.dump or default_dump_path() if gazetteer.with_anchors or gazetteer.build.wikipedia else None
    )
    given_corpus = anchors.dump is None and (Path(anchors.corpus_dir) / "manifest.json").is_file()
    if gazetteer.with_anchors and not given_corpus:  # a corpus given by path only is used as it is
        build_anchor_corpus(
            dump, anchors.corpus_dir, anchors.build, num_workers=anchors.build_workers, progress=progress
        )
    build_gazetteer(
        gazetteer.build,
        gazetteer.gazetteer_dir,
        dump_path=dump if gazetteer.build.wikipedia else None,
        user_lists_dir=gazetteer.user_lists_dir,
        types=list(gazetteer.types),
        progress=progress,
        workers=gazetteer.workers,
    )
    return label_corpus(
        gazetteer.gazetteer_dir,
        gazetteer.labelled_dir,
        gazetteer.match,
        anchors_dir=anchors.corpus_dir if gazetteer.with_anchors else None,
        raw_text=gazetteer.raw_text,
        shard_size=gazetteer.shard_size,
        workers=gazetteer.workers,
        progress=progress,
    )
