"""A NaN loss on one DDP rank only stops every rank together: 2 real processes on gloo (CPU), rank 1's
loss turns NaN at one step; both must exit with the one-line error within a timeout (none left waiting
in the gradient all-reduce), and the last checkpoint stays that of the last good step."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch

NAN_AT_STEP = 2  # rank 1's loss is NaN at this global step (0-based): the error names step 3
PROGRAM = "nan-ddp"

WORKER = '''
"""One DDP rank: Lightning sees LOCAL_RANK and joins the process group instead of launching."""
import sys
from pathlib import Path

import pytorch_lightning as pl
import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cofee.callbacks.finite_loss import FiniteLossGuard
from cofee.utils.errors import user_errors

torch.set_num_threads(1)
OUT, NAN_AT = Path(sys.argv[1]), int(sys.argv[2])


class Poisoned(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        if self.global_rank == 1 and self.global_step == NAN_AT:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(64, 4, generator=generator))
        return torch.utils.data.DataLoader(data, batch_size=4)


module = Poisoned()
trainer = pl.Trainer(
    accelerator="cpu",
    devices=2,
    strategy="ddp",
    max_epochs=1,
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    callbacks=[
        FiniteLossGuard("nee"),
        ModelCheckpoint(dirpath=OUT / "ckpt", save_last=True, every_n_train_steps=1, save_top_k=0),
    ],
)
try:
    with user_errors("nan-ddp"):
        trainer.fit(module)
finally:  # the weights this rank holds when it stops: those of the last good step
    torch.save(module.layer.state_dict(), OUT / f"weights{trainer.global_rank}.pt")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes that start Lightning: about 50 s on 2 shared cores
def test_nan_on_one_rank_stops_both_ranks_with_the_same_message(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "GROUP_RANK")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), NODE_RANK="0", OMP_NUM_THREADS="1")
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(NAN_AT_STEP)],
            env={**env, "LOCAL_RANK": str(rank)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    deadline = time.time() + 180
    outputs = []
    try:
        for process in ranks:
            _, stderr = process.communicate(timeout=max(1.0, deadline - time.time()))
            outputs.append((process.returncode, stderr))
    finally:  # a rank left waiting in a collective would hang: the timeout above fails the test
        for process in ranks:
            process.kill()
            process.wait()

    lines = []
    for rank, (code, stderr) in enumerate(outputs):
        errors = [line for line in stderr.splitlines() if line.startswith(f"{PROGRAM}: error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, f"rank {rank}: {stderr[-3000:]}"
        lines.append(errors[0])
    assert lines[0] == lines[1]  # the same decision, the same words, on every rank
    assert (
        f"the training loss is nan at step {NAN_AT_STEP + 1} (epoch 0, batch {NAN_AT_STEP}, rank 1 of 2)"
        in (lines[0])
    )

    # the last checkpoint is that of the last good step, and both ranks still hold its weights
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == NAN_AT_STEP
    for rank in range(2):
        weights = torch.load(tmp_path / f"weights{rank}.pt", weights_only=True)
        for name, tensor in weights.items():
            assert torch.isfinite(tensor).all(), (rank, name)
            assert torch.equal(saved["state_dict"][f"layer.{name}"], tensor), (rank, name)
