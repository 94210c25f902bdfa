import numpy as np

from cofee.alignment import EncodedWindow
from cofee.data_modules.batching import LengthBucketBatchSampler, WindowCollator


def _lengths(n=400, seed=0):
    return np.random.default_rng(seed).integers(5, 120, size=n).tolist()


def test_every_index_once_and_seeded_by_epoch():
    lengths = _lengths()
    sampler = LengthBucketBatchSampler(lengths, batch_size=16, seed=3)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(len(lengths)))
    assert list(sampler) == first  # same epoch, same order (resume replays the same batches)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert len(sampler) == len(first)


def test_bucketing_reduces_padding():
    lengths = _lengths()

    def padded(bucket):
        batches = list(LengthBucketBatchSampler(lengths, batch_size=16, seed=0, bucket=bucket))
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(True) < 0.8 * padded(False)


def test_no_shuffle_keeps_order():
    batches = list(LengthBucketBatchSampler([3] * 10, batch_size=4, shuffle=False, bucket=False))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_collator_pads_dynamically_or_to_fixed_width():
    windows = [
        EncodedWindow([101, 7, 102], [-100, 1, -100], [1], [(0, 1)], [(0, 1, "ENT")], 0),
        EncodedWindow([101, 7, 8, 9, 102], [-100, 0, 0, 0, -100], [1, 2, 3], [(0, 1), (2, 3), (4, 5)], [], 1),
    ]
    batch = WindowCollator(pad_token_id=0)(windows)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][0].tolist() == [101, 7, 102, 0, 0]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["labels"][0].tolist() == [-100, 1, -100, -100, -100]
    assert batch["spans"] == [[(0, 1, "ENT")], []]
    assert WindowCollator(pad_token_id=0, pad_to=16)(windows)["input_ids"].shape == (2, 16)
