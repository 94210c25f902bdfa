import numpy as np
import pytest

from cofee.data.alignment import EncodedWindow
from cofee.data_modules import batching
from cofee.data_modules.batching import LengthBucketBatchSampler, ResumableLoader, WindowCollator


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


# -- position: state_dict / load_state_dict ---------------------------------------------------
def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_sampler_position_round_trip():
    lengths = _lengths(200)
    sampler = LengthBucketBatchSampler(lengths, batch_size=16, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    assert sampler.state_dict() == {"epoch": 2, "consumed": len(full), "seed": 5, "world": 1}
    for taken in (1, 5, len(full)):
        it = iter(sampler)
        assert _take(it, taken) == full[:taken]
        state = sampler.state_dict()
        assert state == {"epoch": 2, "consumed": taken, "seed": 5, "world": 1}
        restored = LengthBucketBatchSampler(lengths, batch_size=16, seed=5)
        restored.load_state_dict(state)
        assert restored.state_dict() == state  # restored, not iterated yet: the position as saved
        restored.set_epoch(2)  # Lightning sets the epoch it resumes in: the same one keeps the position
        assert list(restored) == full[taken:]
        assert restored.state_dict()["consumed"] == len(full)
        assert list(restored) == full  # the position applies once; the next iteration is a whole epoch


def test_a_position_belongs_to_its_epoch():
    lengths = _lengths(200)
    sampler = LengthBucketBatchSampler(lengths, batch_size=16, seed=5)
    _take(iter(sampler), 4)
    state = sampler.state_dict()
    sampler.set_epoch(1)
    assert sampler.state_dict()["consumed"] == 0
    epoch1 = list(sampler)
    restored = LengthBucketBatchSampler(lengths, batch_size=16, seed=5)
    restored.load_state_dict(state)
    restored.set_epoch(1)  # saved at the end of epoch 0 (or mid-epoch 0), resumed in epoch 1
    assert restored.state_dict() == {"epoch": 1, "consumed": 0, "seed": 5, "world": 1}
    assert list(restored) == epoch1


def test_the_iterator_reads_epoch_and_position_at_its_first_batch():
    lengths = _lengths(200)
    sampler = LengthBucketBatchSampler(lengths, batch_size=16, seed=5)
    sampler.set_epoch(3)
    full = list(sampler)
    restored = LengthBucketBatchSampler(lengths, batch_size=16, seed=5)
    early = iter(restored)  # Lightning builds the iterator before the restore and before set_epoch
    restored.load_state_dict({"epoch": 3, "consumed": 2, "seed": 5, "world": 1})
    restored.set_epoch(3)
    assert list(early) == full[2:]


def test_ddp_positions(monkeypatch):
    """Every rank loads rank 0's position (Lightning saves rank 0's checkpoint): all ranks have taken
    the same number of batches. Resumed on another number of ranks, each rank skips its share."""
    lengths = _lengths(203)
    shards = {}
    for rank in range(2):
        monkeypatch.setattr(batching, "_world", lambda r=rank: (r, 2))
        sampler = LengthBucketBatchSampler(lengths, batch_size=8, seed=1)
        shards[rank] = list(sampler)
        it = iter(sampler)
        _take(it, 3)
        if rank == 0:
            saved = sampler.state_dict()
    assert saved == {"epoch": 0, "consumed": 3, "seed": 1, "world": 2}
    for rank in range(2):
        monkeypatch.setattr(batching, "_world", lambda r=rank: (r, 2))
        restored = LengthBucketBatchSampler(lengths, batch_size=8, seed=1)
        restored.load_state_dict(saved)
        assert list(restored) == shards[rank][3:]
    monkeypatch.setattr(batching, "_world", lambda: (0, 1))
    single = LengthBucketBatchSampler(lengths, batch_size=8, seed=1)
    single.load_state_dict(saved)
    assert list(single) == list(LengthBucketBatchSampler(lengths, batch_size=8, seed=1))[6:]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stock_stateful_dataloader_restores_the_sampler(workers):
    """torchdata's own state (with the sampler's position in it) resumes exactly, with or without
    worker processes that fetch ahead."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader():
        sampler = LengthBucketBatchSampler(_lengths(120), batch_size=8, seed=2)
        return StatefulDataLoader(list(range(120)), batch_sampler=sampler, num_workers=workers)

    full = [b.tolist() for b in loader()]
    first = loader()
    it = iter(first)
    assert [b.tolist() for b in _take(it, 4)] == full[:4]
    state = first.state_dict()
    again = loader()
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == full[4:]


@pytest.mark.parametrize(("workers", "resumed_workers"), [(0, 0), (2, 0), (0, 2), (2, 2)])
def test_resumable_loader_state_is_the_position_at_the_last_batch(workers, resumed_workers):
    def loader(num_workers):
        sampler = LengthBucketBatchSampler(_lengths(120), batch_size=8, seed=2)
        sampler.set_epoch(1)
        return ResumableLoader(list(range(120)), batch_sampler=sampler, num_workers=num_workers)

    full = [b.tolist() for b in loader(0)]
    first = loader(workers)
    assert first.state_dict() == {"epoch": 1, "consumed": 0, "seed": 2, "world": 1}
    it = iter(first)
    assert [b.tolist() for b in _take(it, 5)] == full[:5]
    state = first.state_dict()  # workers have fetched ahead: not counted
    assert state == {"epoch": 1, "consumed": 5, "seed": 2, "world": 1}
    again = loader(resumed_workers)
    early = iter(again)  # built before the restore (Lightning's `estimated_stepping_batches`)
    again.load_state_dict(state)
    again.load_state_dict(state)  # Lightning and LoaderPositionCallback may both restore it
    assert again.state_dict() == state
    assert [b.tolist() for b in early] == full[5:]
    assert again.state_dict() == {"epoch": 1, "consumed": len(full), "seed": 2, "world": 1}
    assert [b.tolist() for b in again] == full  # the next iteration is a whole epoch


def test_resumable_loader_needs_a_stateful_batch_sampler():
    with pytest.raises(TypeError, match="no state_dict"):
        ResumableLoader(list(range(10)), batch_size=2)


# -- under Lightning: built before or after the restore, reloaded every epoch --------------------
def _fit(folder, crash_at=None, ckpt_path=None, early=True, reload=0, workers=0):
    """Three epochs of 6 batches, last.ckpt every 4 steps; `crash_at`: raise at that global step."""
    import pytorch_lightning as pl
    import torch

    from cofee.callbacks.resume import LoaderPositionCallback, last_checkpoints

    seen = []

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            seen.append((self.current_epoch, batch_idx, batch.tolist()))
            if self.global_step == crash_at:
                raise RuntimeError("killed")
            return self.layer(batch.float()[:, None]).sum()

        def configure_optimizers(self):
            if early:  # builds the train loader before the restore
                assert self.trainer.estimated_stepping_batches == 18
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            sampler = LengthBucketBatchSampler(_lengths(24), batch_size=4, seed=1)
            return ResumableLoader(list(range(24)), batch_sampler=sampler, num_workers=workers)

    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=True,
        reload_dataloaders_every_n_epochs=reload,
        callbacks=[*last_checkpoints(folder, every_n_steps=4), LoaderPositionCallback()],
    )
    try:
        trainer.fit(Module(), ckpt_path=ckpt_path)
    except RuntimeError:
        pass
    return seen


@pytest.mark.parametrize(
    ("early", "reload", "workers"),
    [(True, 0, 0), (True, 1, 0), (True, 2, 2), (False, 0, 0), (False, 1, 0)],
)
def test_lightning_resumes_the_loader_exactly(tmp_path, early, reload, workers):
    options = {"early": early, "reload": reload, "workers": workers}
    full = _fit(tmp_path / "full", **options)
    assert len(full) == 18
    for crash in (9, 14):  # last.ckpt from step 8 (epoch 1, batch 2), from step 12 (an epoch end)
        folder = tmp_path / f"crash{crash}"
        _fit(folder, crash_at=crash, **options)
        step = (crash // 4) * 4
        resumed = _fit(folder, ckpt_path=str(folder / "last.ckpt"), **options)
        assert resumed == full[step:], (crash, step)
