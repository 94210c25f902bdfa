"""WikiAnchorDataModule: the anchor corpus as type-agnostic entity spans for ESI.

`prepare_data` builds the corpus (or finds it up to date) on one process per node; `setup` reads it,
holds out whole pages for dev (no sentence of a dev page is trained on), and aligns spans to tokens.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.config import AnchorBuildConfig
from cofee.data.alignment import AlignmentStats, EncodedWindow, encode_sentences
from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path, iter_corpus, load_manifest
from cofee.data_modules.batching import TrainValWindowLoaders
from cofee.utils.io import stable_hash

log = logging.getLogger(__name__)


def is_dev_page(page_id: int, dev_fraction: float, split_seed: int) -> bool:
    bucket = int(stable_hash([split_seed, page_id]), 16) % 10_000
    return bucket < dev_fraction * 10_000


class WikiAnchorDataModule(TrainValWindowLoaders, pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        label2id: dict[str, int],
        corpus_dir: str | Path,
        dump: str | Path | None = None,
        build: AnchorBuildConfig | None = None,
        build_workers: int = 1,
        scheme: str = "BIO",
        entity_type: str = "ENT",
        span_kinds: tuple[str, ...] = ("anchor", "repeat", "title"),
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        dev_fraction: float = 0.1,
        split_seed: int = 0,
        max_train_sentences: int | None = None,
        seed: int = 0,
        bucket: bool = True,
        num_workers: int = 0,
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.label2id = label2id
        self.corpus_dir = Path(corpus_dir)
        self.dump = dump
        self.build = build or AnchorBuildConfig()
        self.build_workers = build_workers
        self.scheme = scheme
        self.entity_type = entity_type
        self.span_kinds = set(span_kinds)
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.dev_fraction = dev_fraction
        self.split_seed = split_seed
        self.max_train_sentences = max_train_sentences
        self.seed = seed
        self.bucket = bucket
        self.num_workers = num_workers
        self.train_windows: list[EncodedWindow] | None = None
        self.val_windows: list[EncodedWindow] | None = None
        self.stats: dict[str, AlignmentStats] = {}

    def prepare_data(self) -> None:
        if self.dump is None and (self.corpus_dir / "manifest.json").is_file():
            return  # a corpus given by path only: use it as it is
        build_anchor_corpus(
            self.dump or default_dump_path(), self.corpus_dir, self.build, num_workers=self.build_workers
        )

    @property
    def manifest(self) -> dict:
        return load_manifest(self.corpus_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.train_windows is not None:
            return  # idempotent: Lightning may call setup more than once
        split: dict[str, tuple[list[str], list[list]]] = {"train": ([], []), "val": ([], [])}
        for record in iter_corpus(self.corpus_dir):
            name = "val" if is_dev_page(record["page_id"], self.dev_fraction, self.split_seed) else "train"
            texts, spans = split[name]
            texts.append(record["text"])
            spans.append(
                [(s, e, self.entity_type) for s, e, _t, kind in record["spans"] if kind in self.span_kinds]
            )
        texts, spans = split["train"]
        if self.max_train_sentences is not None and len(texts) > self.max_train_sentences:
            keep = np.sort(
                np.random.default_rng(self.seed).permutation(len(texts))[: self.max_train_sentences]
            )
            split["train"] = ([texts[i] for i in keep], [spans[i] for i in keep])
        encoded = {}
        for name, (texts, spans) in split.items():
            self.stats[name] = AlignmentStats()
            encoded[name] = encode_sentences(
                self.tokenizer, texts, spans, self.scheme, self.label2id, self.max_length, self.stats[name]
            )
            log.info("anchor corpus %s: %s", name, asdict(self.stats[name]))
        self.train_windows, self.val_windows = encoded["train"], encoded["val"]
        if not self.train_windows or not self.val_windows:
            raise ValueError(
                f"{self.corpus_dir}: the split gave {len(self.train_windows)} train and "
                f"{len(self.val_windows)} dev windows; adjust data.anchors.dev_fraction"
            )
