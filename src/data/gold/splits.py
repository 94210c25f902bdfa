"""Fixed, seeded splits of a gold set, nested training fractions, and k-shot subsets.

Everything here is deterministic given the seed: randomness comes only from
`numpy.random.default_rng(seed)` (never Python's `hash()`), so the same call gives the same indices in
any process. Indices refer to positions in the list of sentences passed in and are returned sorted.

Stratified split (`split_sentences`)
1. Each sentence gets a key: its rarest entity type (fewest mentions in the whole set; ties broken by
   type name), or "none" when it has no entity. Every sentence that contains type T therefore has T or
   a rarer type as its key.
2. Keys are visited smallest first (by sentence count, then name) and "none" last; one generator
   seeded with `seed` shuffles each key's sentences in turn.
3. A key's sentences are dealt out to train/dev/test: for an entity key, first one to each split with
   a positive ratio (when the key has at least that many sentences); then one at a time to the split
   whose share of everything dealt so far lags its ratio most (ties go to the earlier split). Running
   totals carry across keys and the large "none" key comes last, so the split sizes end close to the
   ratios (within a sentence or so when there are enough sentences without entities).
4. A repair pass then moves, for any type missing from a split, one sentence containing it from the
   split that has the most such sentences, provided the donor keeps at least one sentence of every
   type it had (types in fewer sentences than there are splits excepted: they cannot be everywhere).
   So every type ends up in every split whenever it occurs in at least as many sentences as there are
   splits (barring pathological overlaps of types).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cofee.data.gold.readers import GoldSentence, corpus_stats, format_conll, read_gold
from cofee.utils.errors import CofeeError, InputFileError
from cofee.utils.io import atomic_directory, atomic_write_json, read_json, sha256_file

SPLITS = ("train", "dev", "test")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 1.0)
SPLIT_FORMAT_VERSION = 1
SPLIT_SCHEME = "BIO"


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0):
        raise CofeeError(
            f"split ratios must be {len(SPLITS)} non-negative numbers summing to 1, got {ratios}"
        )
    if ratios[0] == 0:
        raise CofeeError(f"the train ratio must be positive, got {ratios}")
    return ratios


def _types_of(sentence: GoldSentence) -> set[str]:
    return {kind for _s, _e, kind in sentence.spans}


def stratum_keys(sentences: Sequence[GoldSentence]) -> list[str]:
    """Each sentence's stratum: its rarest entity type (ties by name), or "none"."""
    counts = Counter(kind for s in sentences for _a, _b, kind in s.spans)
    return [min(_types_of(s), key=lambda t: (counts[t], t)) if s.spans else "none" for s in sentences]


def split_sentences(
    sentences: Sequence[GoldSentence], seed: int = 0, ratios: Sequence[float] = DEFAULT_RATIOS
) -> dict[str, list[int]]:
    """Stratified train/dev/test indices (see the module docstring for the rule)."""
    ratios = _check_ratios(ratios)
    keys = stratum_keys(sentences)
    by_key: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    rng = np.random.default_rng(seed)
    active = [j for j, r in enumerate(ratios) if r > 0]
    assigned = [0] * len(SPLITS)
    parts: list[list[int]] = [[] for _ in SPLITS]
    for key in sorted(by_key, key=lambda key: (key == "none", len(by_key[key]), key)):
        members = [by_key[key][i] for i in rng.permutation(len(by_key[key]))]
        counts = [0] * len(SPLITS)
        remaining = len(members)
        if key != "none" and remaining >= len(active):
            for j in active:
                counts[j] += 1
                assigned[j] += 1
            remaining -= len(active)
        for _ in range(remaining):
            total = sum(assigned) + 1
            j = max(active, key=lambda j: (ratios[j] * total - assigned[j], -j))
            counts[j] += 1
            assigned[j] += 1
        position = 0
        for j in range(len(SPLITS)):
            parts[j].extend(members[position : position + counts[j]])
            position += counts[j]
    _repair(sentences, parts, active)
    return {name: sorted(part) for name, part in zip(SPLITS, parts)}


def _repair(sentences: Sequence[GoldSentence], parts: list[list[int]], active: list[int]) -> None:
    """Move sentences so that every type sits in every active split where its count allows."""
    sentence_counts = Counter(t for s in sentences for t in _types_of(s))
    too_rare = {t for t, n in sentence_counts.items() if n < len(active)}  # cannot be in every split anyway
    for kind in sorted(sentence_counts):
        for j in active:
            has = [[i for i in parts[k] if kind in _types_of(sentences[i])] for k in range(len(parts))]
            if has[j]:
                continue
            donors = sorted((k for k in active if len(has[k]) >= 2), key=lambda k: (-len(has[k]), k))
            for donor in donors:
                type_counts = Counter(t for i in parts[donor] for t in _types_of(sentences[i]))
                movable = [
                    i
                    for i in has[donor]
                    if all(type_counts[t] >= 2 or t in too_rare for t in _types_of(sentences[i]))
                ]
                if movable:
                    parts[donor].remove(movable[0])
                    parts[j].append(movable[0])
                    break


def fraction_subsets(
    n_train: int, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[float, list[int]]:
    """Nested training subsets: one seeded permutation of range(n_train), each fraction a prefix of it.

    Size of fraction f: floor(f * n_train + 0.5), at least 1. A smaller fraction's subset is always
    inside a larger one's; indices are returned sorted.
    """
    if n_train < 1:
        raise CofeeError(f"cannot take fractions of an empty training set (n_train={n_train})")
    for f in fractions:
        if not 0 < f <= 1:
            raise CofeeError(f"training fractions must lie in (0, 1], got {f}")
    order = np.random.default_rng(seed).permutation(n_train).tolist()
    return {f: sorted(order[: max(1, min(n_train, math.floor(f * n_train + 0.5)))]) for f in fractions}


def kshot_subset(
    sentences: Sequence[GoldSentence], k: int, seed: int = 0, types: Iterable[str] | None = None
) -> list[int]:
    """Greedy k-shot sampling after Yang & Katiyar (2020, Algorithm 1), made nested in k.

    Sentences are visited in one seeded random order (sentences without entities never qualify).
    Types are handled rarest first (fewest mentions in `sentences`, ties by name). For level
    j = 1, 2, ..., k and each type T in that order: while T has fewer than j mentions in the chosen
    set, add the next unchosen sentence (in the seeded order) that contains T; counts are mentions of
    every type in the added sentence. Because level k starts from the set chosen at level k - 1, the
    subset for k is inside the subset for k + 1 with the same seed. As in Yang & Katiyar there is no
    upper cap, so frequent types usually get more than k mentions; a type with fewer than k mentions
    in all of `sentences` gets all of them.
    """
    if k < 1:
        raise CofeeError(f"k-shot needs k >= 1, got {k}")
    totals = Counter(kind for s in sentences for _a, _b, kind in s.spans)
    wanted = sorted(set(types) if types is not None else set(totals), key=lambda t: (totals[t], t))
    order = np.random.default_rng(seed).permutation(len(sentences)).tolist()
    with_type = {
        t: [i for i in order if any(kind == t for _a, _b, kind in sentences[i].spans)] for t in wanted
    }
    cursor = dict.fromkeys(wanted, 0)
    chosen: set[int] = set()
    counts: Counter = Counter()
    for level in range(1, k + 1):
        for t in wanted:
            candidates = with_type[t]
            while counts[t] < level and cursor[t] < len(candidates):
                index = candidates[cursor[t]]
                cursor[t] += 1
                if index in chosen:
                    continue
                chosen.add(index)
                counts.update(kind for _a, _b, kind in sentences[index].spans)
    return sorted(chosen)


# ---------------------------------------------------------------------------------- on-disk splits


@dataclass
class GoldSplit:
    """A split written by `write_split`: its folder and the manifest (split.json)."""

    directory: Path
    manifest: dict[str, Any]
    reused: bool = False

    def path(self, split: str) -> Path:
        if split not in SPLITS:
            raise CofeeError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
        return self.directory / f"{split}.conll"

    @property
    def train(self) -> Path:
        return self.path("train")

    @property
    def dev(self) -> Path:
        return self.path("dev")

    @property
    def test(self) -> Path:
        return self.path("test")


def write_split(
    sentences: Sequence[GoldSentence],
    out_dir: str | Path,
    seed: int = 0,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    source_path: str | Path | None = None,
    read_options: dict[str, Any] | None = None,
) -> GoldSplit:
    """Write train/dev/test.conll (BIO) and split.json into `out_dir`, replacing it in one rename.

    split.json holds the seed, ratios, the source path and sha256, the stratification rule, each
    split's indices into the source, counts (sentences, tokens, entities, per type), and each file's sha256.
    """
    ratios = _check_ratios(ratios)
    out_dir = Path(out_dir)
    indices = split_sentences(sentences, seed=seed, ratios=ratios)
    manifest: dict[str, Any] = {
        "format_version": SPLIT_FORMAT_VERSION,
        "scheme": SPLIT_SCHEME,
        "seed": seed,
        "ratios": list(ratios),
        "stratify": "rarest entity type per sentence ('none' without entities)",
        "source": str(source_path) if source_path is not None else None,
        "source_sha256": sha256_file(source_path) if source_path is not None else None,
        "read_options": dict(read_options or {}),
        "total": corpus_stats(sentences),
        "splits": {},
    }
    with atomic_directory(out_dir) as tmp:
        for name in SPLITS:
            part = [sentences[i] for i in indices[name]]
            (tmp / f"{name}.conll").write_text(format_conll(part, SPLIT_SCHEME), encoding="utf-8")
            manifest["splits"][name] = {
                **corpus_stats(part),
                "file": f"{name}.conll",
                "sha256": sha256_file(tmp / f"{name}.conll"),
                "indices": indices[name],
            }
        atomic_write_json(tmp / "split.json", manifest)
    return GoldSplit(out_dir, manifest)


def _refuse(out_dir: Path, why: str) -> InputFileError:
    return InputFileError(
        out_dir,
        f"{why}; the folder is kept as it is: give another data.split_dir (or remove this folder to split afresh)",
    )


def _existing_split(
    out_dir: Path,
    source_path: Path,
    source_sha: str,
    seed: int,
    ratios: tuple[float, ...],
    read_options: dict[str, Any],
) -> dict | None:
    """The manifest of the split already in `out_dir` when it is this very split, intact; None when the
    folder is free (absent, or empty). A folder that holds anything else is refused, never rewritten:
    the split of another source or other settings, a hand-edited split file, or files of the user's."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise InputFileError(out_dir, "exists but is not a folder (data.split_dir)")
    meta_path = out_dir / "split.json"
    if not meta_path.is_file():
        if any(p.name in {f"{n}.conll" for n in SPLITS} | {"train.txt"} for p in out_dir.iterdir()):
            raise _refuse(out_dir, "holds split files but no split.json, so they were not written by cofee")
        if any(not p.name.startswith(".") for p in out_dir.iterdir()):
            raise _refuse(out_dir, "is not empty and holds no split.json")
        return None
    manifest = read_json(meta_path)
    if not isinstance(manifest, dict) or manifest.get("format_version") != SPLIT_FORMAT_VERSION:
        raise InputFileError(meta_path, f"not a split manifest of format version {SPLIT_FORMAT_VERSION}")
    if manifest.get("source_sha256") != source_sha:
        recorded = manifest.get("source_sha256") or "?"
        raise _refuse(
            out_dir,
            f"holds the split of {manifest.get('source')} (sha256 {recorded[:12]}), not of {source_path} "
            f"(sha256 {source_sha[:12]}); e.g. data.split_dir={out_dir.parent / split_folder_name(source_path, source_sha)}",
        )
    wanted = {"seed": seed, "ratios": list(ratios), "read_options": read_options}
    differ = [
        key
        for key, value in wanted.items()
        if manifest.get(key, {} if key == "read_options" else None) != value
    ]
    if differ:
        was = ", ".join(f"{k}={manifest.get(k)}" for k in differ)
        now = ", ".join(f"{k}={wanted[k]}" for k in differ)
        raise _refuse(out_dir, f"holds a split made with {was}, not {now}")
    for name in SPLITS:
        entry = manifest.get("splits", {}).get(name, {})
        file = out_dir / f"{name}.conll"
        if not file.is_file():
            raise _refuse(out_dir, f"{name}.conll is missing")
        if sha256_file(file) != entry.get("sha256"):
            raise _refuse(
                out_dir,
                f"{name}.conll was changed since split.json was written (its sha256 differs); to train on an "
                f"edited split give it as data.train_file/dev_file/test_file",
            )
    return manifest


def split_folder_name(source_path: str | Path, source_sha: str) -> str:
    """A folder name keyed by the source file's content: `<stem>-<first 12 hex digits of its sha256>`."""
    return f"{Path(source_path).stem}-{source_sha[:12]}"


def ensure_split(
    source_path: str | Path | None = None,
    out_dir: str | Path = "data/gold/wnut16",
    seed: int = 0,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    **read_kwargs: Any,
) -> GoldSplit:
    """The split of `source_path` (default: the packaged WNUT16) in `out_dir`, written once.

    An existing split is reused when its source sha256, seed, ratios and `read_kwargs` match and its
    files are intact (their sha256 match split.json). Anything else in `out_dir` is refused with an
    `InputFileError` and left as it is: a split of another source or other settings, a split file
    edited by hand, a folder of files cofee did not write. `read_kwargs` go to `read_gold`.
    """
    from cofee.data.gold.readers import default_wnut16_path

    source_path = Path(source_path) if source_path is not None else default_wnut16_path()
    ratios = _check_ratios(ratios)
    out_dir = Path(out_dir)
    if not source_path.is_file():
        raise InputFileError(source_path, "file not found")
    source_sha = sha256_file(source_path)
    read_options = json.loads(json.dumps(read_kwargs, sort_keys=True, default=str))
    manifest = _existing_split(out_dir, source_path, source_sha, seed, ratios, read_options)
    if manifest is not None:
        return GoldSplit(out_dir, manifest, reused=True)
    sentences = read_gold(source_path, **read_kwargs)
    if not sentences:
        raise InputFileError(source_path, "no sentences to split")
    return write_split(
        sentences, out_dir, seed=seed, ratios=ratios, source_path=source_path, read_options=read_options
    )
