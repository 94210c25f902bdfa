"""The three gold splits a fine-tuning runs on, read and checked before any training starts.

Either the user's own train/dev/test files or the fixed seeded split of a source file
(`cofee.data.gold.splits.ensure_split`). Every split must hold sentences and entities: an empty dev
split would select nothing (dev F1 0.0 at step 0) and an empty test split scores nothing, so either is
an `InputFileError` naming the file, raised before a model is even loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cofee.data.gold.readers import GoldSentence, entity_type_counts, read_gold
from cofee.data.gold.splits import SPLITS, ensure_split
from cofee.utils.errors import ConfigError, InputFileError
from cofee.utils.io import atomic_write_text

# The training split's text without its labels, one sentence a line, written beside the split:
# in-domain raw text for NEE and FET (never dev or test text).
TRAIN_TEXT = "train.txt"


@dataclass
class GoldSplits:
    train: list[GoldSentence]
    dev: list[GoldSentence]
    test: list[GoldSentence]
    paths: dict[str, Path] = field(default_factory=dict, compare=False)  # split -> the file it was read from

    @property
    def types(self) -> list[str]:
        return sorted(entity_type_counts(self.train + self.dev + self.test))


def check_gold_splits(splits: GoldSplits) -> None:
    """`InputFileError` naming the file of the first split without sentences or without entities."""
    for name in SPLITS:
        sentences = getattr(splits, name)
        path = splits.paths.get(name, f"<{name} split>")
        if not sentences:
            raise InputFileError(path, f"the {name} split holds no sentences")
        if not any(s.spans for s in sentences):
            raise InputFileError(
                path, f"the {name} split holds {len(sentences)} sentence(s) but no entity to learn or score"
            )


def load_gold_splits(
    source: str | Path | None,
    split_dir: str | Path,
    scheme: str = "BIO",
    split_seed: int = 0,
    train_file: str | Path | None = None,
    dev_file: str | Path | None = None,
    test_file: str | Path | None = None,
) -> GoldSplits:
    """User-given train/dev/test files, or the fixed seeded split of `source` (default WNUT16), checked
    by `check_gold_splits`."""
    if train_file or dev_file or test_file:
        given = {"train": train_file, "dev": dev_file, "test": test_file}
        missing = [name for name, f in given.items() if not f]
        if missing:
            raise ConfigError(f"data.{missing[0]}_file", "give train, dev and test files together")
        paths = {name: Path(f) for name, f in given.items()}
        splits = GoldSplits(*(read_gold(paths[name], scheme=scheme) for name in SPLITS), paths=paths)
        check_gold_splits(splits)
        return splits
    split = ensure_split(source, split_dir, seed=split_seed, scheme=scheme)
    paths = {name: split.path(name) for name in SPLITS}
    splits = GoldSplits(*(read_gold(paths[name], scheme=scheme) for name in SPLITS), paths=paths)
    check_gold_splits(splits)
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
