"""WikiAnchorDataModule: the anchor corpus as type-agnostic entity spans for ESI.

`prepare_data` builds the corpus (or finds it up to date) and its token cache on one process per
node; `setup` opens the cache (building it under a file lock if `prepare_data` did not run): whole
pages held out for dev (no sentence of a dev page is trained on), spans aligned to tokens, windows
memory-mapped (`cofee.data_modules.token_cache`). The seeded training sample
(`max_train_sentences`) is a selection of cached rows, so another sample size needs no new cache.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.config import AnchorBuildConfig
from cofee.data.alignment import AlignmentStats
from cofee.data.wiki.build_anchors import _check_record as check_anchor_record
from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path, load_manifest
from cofee.data_modules.batching import TrainValWindowLoaders
from cofee.data_modules.token_cache import (
    CachedWindows,
    ensure_token_cache,
    load_cache_manifest,
    sample_sentences,
    windowing_settings,
)
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
        cache_dir: str | Path | None = None,
        num_proc: int = 1,
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
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.corpus_dir.parent / "token_cache"
        self.num_proc = num_proc
        self.train_windows: CachedWindows | None = None
        self.val_windows: CachedWindows | None = None
        self.stats: dict[str, AlignmentStats] = {}
        self.cache: Path | None = None  # the token cache folder, after `setup`
        self.sampling: dict | None = None

    def prepare_data(self) -> None:
        if self.dump is not None or not (self.corpus_dir / "manifest.json").is_file():
            build_anchor_corpus(
                self.dump or default_dump_path(), self.corpus_dir, self.build, num_workers=self.build_workers
            )  # else: a corpus given by path only is used as it is
        self.ensure_cache()

    @property
    def manifest(self) -> dict:
        return load_manifest(self.corpus_dir)

    def cache_settings(self) -> dict:
        return {
            **windowing_settings(self),
            "mapping": {
                "kind": "anchors",
                "span_kinds": sorted(self.span_kinds),
                "entity_type": self.entity_type,
            },
        }

    cache_progress = False  # progress bars while the token cache builds: cofee-build-cache turns them on

    def ensure_cache(self) -> Path:
        """The token cache of this corpus, tokenizer and windowing (built by the first process to ask)."""
        return ensure_token_cache(
            self.cache_dir,
            self.corpus_dir,
            self.manifest,
            check_anchor_record,
            self.tokenizer,
            self.cache_settings(),
            self.num_proc,
            progress=self.cache_progress,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_windows is not None:
            return  # idempotent: Lightning may call setup more than once
        self.cache = self.ensure_cache()
        self.train_windows, self.val_windows, self.sampling = open_splits(
            self.cache, self.max_train_sentences, self.seed, "data.anchors.max_train_sentences"
        )
        for name, windows in (("train", self.train_windows), ("val", self.val_windows)):
            self.stats[name] = windows.stats()
            log.info("anchor corpus %s: %s", name, asdict(self.stats[name]))
        if not len(self.train_windows) or not len(self.val_windows):
            raise ValueError(
                f"{self.corpus_dir}: the split gave {len(self.train_windows)} train and "
                f"{len(self.val_windows)} dev windows; adjust data.anchors.dev_fraction"
            )

    def manifest_entry(self) -> dict:
        """What the stage manifest records of this data: the training sample and the token cache."""
        return data_manifest_entry(self.cache, self.sampling)


def open_splits(
    cache: Path, max_train_sentences: int | None, seed: int, key: str
) -> tuple[CachedWindows, CachedWindows, dict]:
    """The train (the seeded sample of `max_train_sentences` sentences) and dev windows of a cache."""
    total = load_cache_manifest(cache)["counts"]["train"]["sentences"]
    keep = sample_sentences(total, max_train_sentences, seed)
    rows = None
    if keep is not None:
        sentence = CachedWindows(cache / "train").column("sentence_index")
        rows = np.flatnonzero(np.isin(sentence, keep))
    sampled = total if keep is None else len(keep)
    log.info("sampled %d of %d sentences (%s=%s)", sampled, total, key, max_train_sentences)
    sampling = {"key": key, "max_train_sentences": max_train_sentences, "sentences": sampled, "of": total,
                "seed": seed}  # fmt: skip
    train = CachedWindows(cache / "train", rows)
    sampling["windows"] = len(train)
    return train, CachedWindows(cache / "val"), sampling


def data_manifest_entry(cache: Path | None, sampling: dict | None) -> dict:
    if cache is None:
        return {}
    manifest = load_cache_manifest(cache)
    return {"data_sampling": sampling, "token_cache": {"key": manifest["key"], "counts": manifest["counts"]}}
