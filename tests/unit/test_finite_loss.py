"""A non-finite loss stops the fit before its update: the weights and last.ckpt stay those of the last
good step, and the error names the stage, the step and the loss."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cofee.callbacks.finite_loss import FiniteLossGuard, NonFiniteLossError


class _Poisoned(pl.LightningModule):
    """A linear model whose loss becomes NaN at one optimizer step."""

    def __init__(self, nan_at_step: int):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.nan_at_step = nan_at_step
        self.weights_seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.weights_seen.append(self.layer.weight.detach().clone())
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_step == self.nan_at_step else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(32, 4))
        return torch.utils.data.DataLoader(data, batch_size=4)


def test_a_nan_loss_stops_the_stage_before_its_update_and_keeps_the_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    module = _Poisoned(nan_at_step=3)
    every_step = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[FiniteLossGuard("nee"), every_step],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(
        NonFiniteLossError, match=r"stage 'nee': the training loss is nan at step 4 \(epoch 0, batch 3\)"
    ):
        trainer.fit(module)
    assert trainer.global_step == 3  # three good updates, none from the NaN batch
    assert torch.equal(module.layer.weight, module.weights_seen[-1])  # untouched by the NaN step
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3 and torch.equal(
        saved["state_dict"]["layer.weight"], module.weights_seen[-1]
    )
