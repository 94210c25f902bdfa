"""The fixed WNUT16 split, nested training fractions, and k-shot subsets."""

import json
import subprocess
import sys

import pytest

from cofee.data.gold.readers import GoldSentence, corpus_stats, default_wnut16_path, read_conll, read_gold
from cofee.data.gold.splits import (
    SPLITS,
    ensure_split,
    fraction_subsets,
    kshot_subset,
    split_sentences,
    stratum_keys,
    write_split,
)
from cofee.utils.errors import InputFileError


@pytest.fixture(scope="module")
def wnut():
    return read_gold(default_wnut16_path())


def _types(sentences, indices):
    return {kind for i in indices for _s, _e, kind in sentences[i].spans}


def test_split_is_deterministic_disjoint_and_complete(wnut):
    split = split_sentences(wnut, seed=0)
    assert split == split_sentences(wnut, seed=0)
    assert split != split_sentences(wnut, seed=1)
    together = [i for name in SPLITS for i in split[name]]
    assert sorted(together) == list(range(len(wnut)))
    assert [len(split[name]) for name in SPLITS] == [1915, 240, 239]
    all_types = _types(wnut, range(len(wnut)))
    for seed in (0, 1, 2):
        split = split_sentences(wnut, seed=seed)
        for name in SPLITS:
            assert _types(wnut, split[name]) == all_types, (seed, name)


def test_split_of_tiny_sets_keeps_every_type_where_possible():
    # Type 'R' sits in 3 sentences, always beside the commoner 'C': R is the key, each split gets one.
    sentences = [GoldSentence(["x", "y"], [(0, 1, "R"), (1, 2, "C")]) for _ in range(3)]
    sentences += [GoldSentence(["x"], [(0, 1, "C")]) for _ in range(7)]
    sentences += [GoldSentence(["x"], []) for _ in range(10)]
    assert stratum_keys(sentences)[:4] == ["R", "R", "R", "C"]
    for seed in range(5):
        split = split_sentences(sentences, seed=seed)
        assert [len(split[name]) for name in SPLITS] == [16, 2, 2]
        for name in SPLITS:
            assert _types(sentences, split[name]) == {"R", "C"}


def test_split_repair_moves_a_type_that_is_never_a_key():
    # 'C' is in 3 sentences, each keyed by a rarer type of its own; dealing alone would leave it in train.
    sentences = [GoldSentence(["x", "y"], [(0, 1, f"R{i}"), (1, 2, "C")]) for i in range(3)]
    sentences += [GoldSentence(["x"], []) for _ in range(30)]
    for seed in range(5):
        split = split_sentences(sentences, seed=seed)
        assert sorted(i for name in SPLITS for i in split[name]) == list(range(33))
        for name in SPLITS:
            assert "C" in _types(sentences, split[name]), (seed, name)


def test_split_ratios_are_checked(wnut):
    from cofee.utils.errors import CofeeError

    with pytest.raises(CofeeError, match="summing to 1"):
        split_sentences(wnut, ratios=(0.8, 0.1))
    split = split_sentences(wnut, ratios=(0.9, 0.1, 0.0))
    assert split["test"] == [] and len(split["dev"]) == 239


def test_write_and_ensure_split(tmp_path, wnut):
    source = default_wnut16_path()
    out = tmp_path / "wnut16"
    first = ensure_split(source, out, seed=0)
    assert not first.reused
    assert sorted(p.name for p in out.iterdir()) == ["dev.conll", "split.json", "test.conll", "train.conll"]
    manifest = json.loads((out / "split.json").read_text())
    assert manifest["seed"] == 0 and manifest["ratios"] == [0.8, 0.1, 0.1]
    assert (
        manifest["source_sha256"] == first.manifest["source_sha256"] and len(manifest["source_sha256"]) == 64
    )
    assert manifest["total"]["entities"] == 1496
    assert sum(manifest["splits"][n]["sentences"] for n in SPLITS) == 2394
    assert sum(manifest["splits"][n]["entities"] for n in SPLITS) == 1496
    train = read_conll(first.train)
    assert corpus_stats(train)["sentences"] == manifest["splits"]["train"]["sentences"]
    assert [s.tokens for s in train] == [wnut[i].tokens for i in manifest["splits"]["train"]["indices"]]
    mtime = (out / "split.json").stat().st_mtime_ns

    again = ensure_split(source, out, seed=0)
    assert again.reused and again.manifest == first.manifest
    assert (out / "split.json").stat().st_mtime_ns == mtime

    # Another seed, a changed source or a hand-edited split file is refused, and the folder kept as it is.
    with pytest.raises(InputFileError, match=r"wnut16: holds a split made with seed=0, not seed=1"):
        ensure_split(source, out, seed=1)
    other = ensure_split(source, tmp_path / "seed1", seed=1)
    assert not other.reused and other.manifest["seed"] == 1
    assert other.manifest["splits"]["dev"]["indices"] != first.manifest["splits"]["dev"]["indices"]

    copy = tmp_path / "ner.txt"
    copy.write_text(source.read_text() + "extra\tO\n")
    with pytest.raises(
        InputFileError,
        match=r"holds the split of .*ner\.txt \(sha256 \w{12}\), not of .*data\.split_dir=.*ner-\w{12}",
    ):
        ensure_split(copy, out, seed=0)
    edited = (out / "dev.conll").read_text().replace("\tO\n", "\tB-person\n", 1)
    (out / "dev.conll").write_text(edited)
    with pytest.raises(InputFileError, match=r"dev\.conll was changed since split\.json was written"):
        ensure_split(source, out, seed=0)
    assert (out / "dev.conll").read_text() == edited and (out / "split.json").stat().st_mtime_ns == mtime
    rewritten = ensure_split(copy, tmp_path / "other", seed=1)
    assert not rewritten.reused and rewritten.manifest["total"]["sentences"] == 2395


def test_ensure_split_refuses_a_folder_of_someone_elses_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me\n")
    source = tmp_path / "src.conll"
    source.write_text("Ada\tB-PER\n\nBob\tB-PER\n\nCy\tB-PER\n")
    with pytest.raises(InputFileError, match=r"mine: is not empty and holds no split\.json"):
        ensure_split(source, folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ensure_split(source, empty).manifest["total"]["sentences"] == 3


def test_write_split_leaves_no_temporary_folders(tmp_path):
    sentences = [GoldSentence([f"w{i}"], [(0, 1, "A")] if i % 2 else []) for i in range(30)]
    write_split(sentences, tmp_path / "s", seed=3, ratios=(0.6, 0.2, 0.2))
    write_split(sentences, tmp_path / "s", seed=4, ratios=(0.6, 0.2, 0.2))
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    assert json.loads((tmp_path / "s" / "split.json").read_text())["seed"] == 4


def test_fraction_subsets_are_nested_and_sized():
    subsets = fraction_subsets(1915, seed=0)
    assert [len(subsets[f]) for f in (0.01, 0.05, 0.1, 0.25, 1.0)] == [19, 96, 192, 479, 1915]
    ordered = [set(subsets[f]) for f in sorted(subsets)]
    assert all(a < b for a, b in zip(ordered, ordered[1:]))
    assert subsets[1.0] == list(range(1915))
    assert fraction_subsets(1915, seed=1)[0.1] != subsets[0.1]
    assert fraction_subsets(10, fractions=(0.01,), seed=0)[0.01].__len__() == 1


_SUBPROCESS = """
import json
from cofee.data.gold.splits import fraction_subsets, kshot_subset, split_sentences
from cofee.data.gold.readers import read_gold, default_wnut16_path
s = read_gold(default_wnut16_path())
print(json.dumps([fraction_subsets(1915, seed=7)[0.05], kshot_subset(s, 4, seed=7), split_sentences(s, seed=7)["dev"]]))
"""


def test_subsets_are_stable_in_a_fresh_process(wnut):
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    fractions, kshot, dev = json.loads(out.stdout)
    assert fractions == fraction_subsets(1915, seed=7)[0.05]
    assert kshot == kshot_subset(wnut, 4, seed=7)
    assert dev == split_sentences(wnut, seed=7)["dev"]


@pytest.mark.parametrize("seed", [0, 1])
def test_kshot_gives_k_mentions_per_type_and_is_nested(wnut, seed):
    from cofee.data.gold.readers import entity_type_counts

    previous: set[int] = set()
    for k in (1, 2, 4, 8, 16, 32):
        chosen = kshot_subset(wnut, k, seed=seed)
        counts = entity_type_counts(wnut[i] for i in chosen)
        assert len(counts) == 10 and min(counts.values()) >= k, (k, counts)
        assert all(wnut[i].spans for i in chosen)
        assert previous <= set(chosen)
        previous = set(chosen)
    assert kshot_subset(wnut, 4, seed=seed) == kshot_subset(wnut, 4, seed=seed)


def test_kshot_takes_all_of_a_type_that_is_too_rare():
    sentences = [GoldSentence(["a"], [(0, 1, "RARE")])] + [
        GoldSentence(["b"], [(0, 1, "C")]) for _ in range(9)
    ]
    chosen = kshot_subset(sentences, 3, seed=0)
    assert 0 in chosen and len(chosen) == 4
    assert kshot_subset(sentences, 3, seed=0, types=["C"]) == sorted(
        kshot_subset(sentences, 3, seed=0, types=["C"])
    )
    assert 0 not in kshot_subset(sentences, 3, seed=0, types=["C"])
