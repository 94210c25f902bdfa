"""GoldNERDataModule: human-annotated NER (CoNLL, JSONL, Chinese characters) for fine-tuning.

The split files are fixed on disk (`cofee.data.gold.splits.ensure_split`); this module takes a seeded
training subset (a fraction, nested across fractions, or k shots per type) and serves windows of
gold tokens, so every prediction maps back to one gold token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.data.alignment import AlignmentStats, EncodedWindow, encode_pretokenized
from cofee.data.gold.readers import GoldSentence, entity_type_counts, read_gold
from cofee.data.gold.splits import ensure_split, fraction_subsets, kshot_subset
from cofee.data_modules.batching import window_loader
from cofee.utils.io import atomic_write_text


@dataclass
class GoldSplits:
    train: list[GoldSentence]
    dev: list[GoldSentence]
    test: list[GoldSentence]

    @property
    def types(self) -> list[str]:
        return sorted(entity_type_counts(self.train + self.dev + self.test))


# The training split's text without its labels, one sentence a line, written beside the split:
# in-domain raw text for NEE and FET (never dev or test text).
TRAIN_TEXT = "train.txt"


def load_gold_splits(
    source: str | Path | None,
    split_dir: str | Path,
    scheme: str = "BIO",
    split_seed: int = 0,
    train_file: str | Path | None = None,
    dev_file: str | Path | None = None,
    test_file: str | Path | None = None,
) -> GoldSplits:
    """User-given train/dev/test files, or the fixed seeded split of `source` (default WNUT16)."""
    if train_file or dev_file or test_file:
        missing = [
            n
            for n, f in (("train_file", train_file), ("dev_file", dev_file), ("test_file", test_file))
            if not f
        ]
        if missing:
            from cofee.utils.errors import ConfigError

            raise ConfigError(f"data.{missing[0]}", "give train, dev and test files together")
        return GoldSplits(*(read_gold(f, scheme=scheme) for f in (train_file, dev_file, test_file)))
    split = ensure_split(source, split_dir, seed=split_seed, scheme=scheme)
    splits = GoldSplits(*(read_gold(split.path(name), scheme=scheme) for name in ("train", "dev", "test")))
    raw = Path(split_dir) / TRAIN_TEXT
    if not raw.is_file():  # in-domain text for NEE/FET (the study's variant e): train only, no labels
        held_out = {" ".join(s.tokens) for s in splits.dev + splits.test}  # tweets repeat across splits
        lines = [" ".join(s.tokens) for s in splits.train]
        atomic_write_text(raw, "".join(line + "\n" for line in lines if line not in held_out))
    return splits


def splits_from_config(data, scheme: str) -> GoldSplits:
    """`load_gold_splits` from a `data` config section (GoldDataConfig in src/config.py)."""
    return load_gold_splits(
        data.source, data.split_dir, scheme, data.split_seed, data.train_file, data.dev_file, data.test_file
    )


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
