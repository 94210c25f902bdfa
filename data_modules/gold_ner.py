"""GoldNERDataModule: human-annotated NER (CoNLL, JSONL, Chinese characters) for fine-tuning.

The split files are fixed on disk (`cofee.data.gold.splits.ensure_split`) and read and checked by
`cofee.data.gold.loading` (re-exported here); this module takes a seeded
training subset (a fraction, nested across fractions, or k shots per type) and serves windows of
gold tokens, so every prediction maps back to one gold token.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.data.alignment import AlignmentStats, EncodedWindow, encode_pretokenized
from cofee.data.gold.loading import (  # noqa: F401  (re-exported: the data module's inputs)
    TRAIN_TEXT,
    GoldSplits,
    check_gold_splits,
    load_gold_splits,
    splits_from_config,
)
from cofee.data.gold.readers import GoldSentence
from cofee.data.gold.splits import fraction_subsets, kshot_subset
from cofee.data_modules.batching import window_loader


def training_subset(
    train: list[GoldSentence], fraction: float = 1.0, kshot: int | None = None, seed: int = 0
) -> list[GoldSentence]:
    if kshot is not None:
        return [train[i] for i in kshot_subset(train, kshot, seed=seed)]
    return [train[i] for i in fraction_subsets(len(train), [fraction], seed=seed)[fraction]]


class GoldNERDataModule(pl.LightningDataModule):
    def __init__(
        self,
        splits: GoldSplits,
        tokenizer: PreTrainedTokenizerBase,
        label2id: dict[str, int],
        scheme: str = "BIO",
        fraction: float = 1.0,
        kshot: int | None = None,
        subset_seed: int = 0,
        seed: int = 0,
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
    ):
        super().__init__()
        self.splits = splits
        self.tokenizer = tokenizer
        self.label2id = label2id
        self.scheme = scheme
        self.fraction = fraction
        self.kshot = kshot
        self.subset_seed = subset_seed
        self.seed = seed
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.windows: dict[str, list[EncodedWindow]] = {}
        self.stats: dict[str, AlignmentStats] = {}
        self.train_sentences: list[GoldSentence] = []

    def setup(self, stage: str | None = None) -> None:
        if self.windows:
            return
        self.train_sentences = training_subset(self.splits.train, self.fraction, self.kshot, self.subset_seed)
        for name, sentences in (
            ("train", self.train_sentences),
            ("val", self.splits.dev),
            ("test", self.splits.test),
        ):
            self.stats[name] = AlignmentStats()
            self.windows[name] = encode_pretokenized(
                self.tokenizer,
                [s.tokens for s in sentences],
                [s.spans for s in sentences],
                self.scheme,
                self.label2id,
                self.max_length,
                self.stats[name],
            )

    def _loader(self, name: str, batch_size: int, train: bool) -> DataLoader:
        return window_loader(
            self.windows[name], batch_size, train, self.tokenizer.pad_token_id, seed=self.seed
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, False)
