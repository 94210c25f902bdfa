"""StageModule.transfer_batch_to_device moves a collated batch's tensors and leaves its Python lists."""

import subprocess
import sys

import torch

from cofee.config import OptimConfig
from cofee.data.alignment import EncodedWindow
from cofee.data_modules.batching import WindowCollator
from cofee.stages.esi import ESIModule


def collated_batch() -> dict:
    windows = [
        EncodedWindow([101, 7, 8, 102], [-100, 1, 2, -100], [1, 2], [(0, 1), (2, 3)], [(0, 2, "ENT")], 0),
        EncodedWindow([101, 9, 102], [-100, 0, -100], [1], [(0, 1)], [], 1),
    ]
    return WindowCollator(pad_token_id=0)(windows)


def test_tensors_move_and_lists_stay_the_same_objects(tiny_encoder):
    module = ESIModule(tiny_encoder, OptimConfig())
    batch = collated_batch()
    moved = module.transfer_batch_to_device(batch, torch.device("meta"), 0)
    for key in ("input_ids", "attention_mask", "labels"):
        assert moved[key].device.type == "meta" and moved[key].shape == batch[key].shape
    # the span and word-position lists are handed over as they are, not rebuilt element by element
    assert moved["spans"] is batch["spans"] and moved["word_positions"] is batch["word_positions"]


def test_a_batch_that_is_not_a_dict_goes_through_lightning(tiny_encoder):
    module = ESIModule(tiny_encoder, OptimConfig())
    moved = module.transfer_batch_to_device([torch.ones(2), [torch.zeros(1)]], torch.device("meta"), 0)
    assert moved[0].device.type == "meta" and moved[1][0].device.type == "meta"


def test_lightnings_note_about_the_override_is_filtered():
    # in a fresh process: pytest resets the warning filters around each test
    script = (
        "import cofee.stages.base\n"
        "from pytorch_lightning.utilities.rank_zero import rank_zero_warn\n"
        "rank_zero_warn('You have overridden `transfer_batch_to_device` in `LightningModule` but have passed "
        "in a `LightningDataModule`. It will use the implementation from `LightningModule` instance.')\n"
        "rank_zero_warn('You have overridden `transfer_batch_to_device` in both `LightningModule` and "
        "`LightningDataModule`.')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "but have passed in a" not in done.stderr
    assert "in both `LightningModule`" in done.stderr  # a real conflict still warns
