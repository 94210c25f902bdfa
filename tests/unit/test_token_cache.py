"""The token cache: built once per corpus, tokenizer and windowing; read as the old lists were."""

import pickle

import numpy as np
import pytest

from cofee.config import AnchorBuildConfig
from cofee.data.alignment import encode_sentences
from cofee.data.tagging import label_names
from cofee.data.wiki.build_anchors import build_anchor_corpus, iter_corpus
from cofee.data_modules.batching import LengthBucketBatchSampler
from cofee.data_modules.token_cache import load_cache_manifest, sample_sentences
from cofee.data_modules.wiki_anchor import WikiAnchorDataModule, is_dev_page
from tests.support import write_dump

LABEL2ID = {name: i for i, name in enumerate(label_names("BIO", ["ENT"]))}


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    build_anchor_corpus(
        write_dump(tmp_path / "dump.xml", n_pages=40), folder, AnchorBuildConfig(), num_workers=1
    )
    return folder


def _module(tokenizer, corpus, **kwargs):
    kwargs = {"dev_fraction": 0.2, "cache_dir": corpus.parent / "cache", **kwargs}
    return WikiAnchorDataModule(tokenizer, LABEL2ID, corpus, **kwargs)


def _old_windows(tokenizer, corpus, max_train_sentences=None, seed=0, max_length=128):
    """What `setup` made before the cache: every sentence in Python lists, encoded at once."""
    split = {"train": ([], []), "val": ([], [])}
    for record in iter_corpus(corpus):
        texts, spans = split["val" if is_dev_page(record["page_id"], 0.2, 0) else "train"]
        texts.append(record["text"])
        spans.append([(s, e, "ENT") for s, e, _t, _k in record["spans"]])
    keep = sample_sentences(len(split["train"][0]), max_train_sentences, seed)
    if keep is not None:
        split["train"] = tuple([part[i] for i in keep] for part in split["train"])
    return {name: encode_sentences(tokenizer, *split[name], "BIO", LABEL2ID, max_length) for name in split}


def _same(old, new):
    assert len(old) == len(new)
    for a, b in zip(old, new):
        assert (a.input_ids, a.labels, a.word_positions, a.word_offset) == (
            b.input_ids,
            b.labels,
            b.word_positions,
            b.word_offset,
        )
        assert [tuple(c) for c in a.word_char_spans] == b.word_char_spans
        assert [tuple(s) for s in a.spans] == [tuple(s) for s in b.spans]


@pytest.mark.parametrize("sample", [None, 25])
def test_cached_windows_are_the_windows_setup_made_before(tokenizer, corpus, sample):
    dm = _module(tokenizer, corpus, max_train_sentences=sample)
    dm.setup("fit")
    old = _old_windows(tokenizer, corpus, sample)
    _same(old["train"], dm.train_windows)
    _same(old["val"], dm.val_windows)
    assert list(dm.train_windows.lengths) == [len(w) for w in old["train"]]
    assert dm.stats["train"].windows == len(old["train"]) and dm.stats["train"].spans > 0
    entry = dm.manifest_entry()
    assert entry["data_sampling"]["max_train_sentences"] == sample
    total = entry["token_cache"]["counts"]["train"]["sentences"]
    assert entry["data_sampling"]["sentences"] == (total if sample is None else sample)


def test_the_cache_is_built_once_and_keyed_by_tokenizer_settings(tokenizer, corpus):
    first = _module(tokenizer, corpus)
    first.setup("fit")
    built = load_cache_manifest(first.cache)
    again = _module(tokenizer, corpus, max_train_sentences=10)  # another sample: the same cache
    again.setup("fit")
    assert again.cache == first.cache and load_cache_manifest(again.cache) == built
    shorter = _module(tokenizer, corpus, max_length=16)
    shorter.setup("fit")
    assert shorter.cache != first.cache
    _same(_old_windows(tokenizer, corpus, max_length=16)["train"], shorter.train_windows)
    folders = sorted(p.name for p in (corpus.parent / "cache").iterdir() if not p.name.endswith(".lock"))
    assert folders == sorted([first.cache.name, shorter.cache.name])  # no temporary folder left


def test_a_copy_of_the_tokenizer_finds_the_cache_and_another_tokenizer_does_not(tokenizer, corpus, tmp_path):
    """NEE and FET load the tokenizer from their parent's export: a copy in another folder must find
    the cache the base tokenizer built; a tokenizer that splits text differently must not."""
    from transformers import AutoTokenizer

    first = _module(tokenizer, corpus)
    first.setup("fit")
    tokenizer.save_pretrained(tmp_path / "export")
    copy = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert copy.name_or_path != tokenizer.name_or_path
    again = _module(copy, corpus)
    again.setup("fit")
    assert again.cache == first.cache
    cased = AutoTokenizer.from_pretrained(tmp_path / "export", do_lower_case=False)
    differs = _module(cased, corpus)
    differs.setup("fit")
    assert differs.cache != first.cache


def test_assigned_fields_hold_across_reads_and_worker_pickling(tokenizer, corpus):
    dm = _module(tokenizer, corpus)
    dm.setup("fit")
    windows = dm.train_windows
    labels = [0] * len(windows[3].labels)
    windows[3].labels = labels  # as self-training relabels a window
    assert windows[3].labels == labels and windows[4].labels != labels
    copy = pickle.loads(pickle.dumps(windows))  # a loader worker's copy: reopens the memory map
    assert copy._table is None or copy is not windows
    assert copy[3].labels == labels and copy[5].input_ids == windows[5].input_ids
    assert [w.input_ids for w in copy.__getitems__([7, 1])] == [windows[7].input_ids, windows[1].input_ids]


def test_the_sampler_reads_lengths_from_the_cache(tokenizer, corpus):
    dm = _module(tokenizer, corpus)
    dm.setup("fit")
    from_cache = LengthBucketBatchSampler(dm.train_windows.lengths, batch_size=4, seed=2)
    from_list = LengthBucketBatchSampler([len(w) for w in dm.train_windows], batch_size=4, seed=2)
    assert list(from_cache) == list(from_list)
    loader = dm.train_dataloader()
    assert np.array_equal(loader.batch_sampler.lengths, dm.train_windows.lengths)
    assert sum(b["input_ids"].shape[0] for b in loader) == len(dm.train_windows)
