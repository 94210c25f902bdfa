"""What every stage shares: the encoder, a span head, optimiser and schedule, metrics, logging.

A stage subclass only builds its head and (if needed) its loss; plumbing lives here.
Metric keys read `<stage>/<split>/<metric>`, e.g. `esi/val/f1`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytorch_lightning as pl
import torch
from torch import nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from cofee.config import OptimConfig
from cofee.models.heads import SpanHead
from cofee.models.metrics import SpanF1


class StageModule(pl.LightningModule):
    stage_name = "stage"

    def __init__(self, encoder: PreTrainedModel, head: SpanHead, optim: OptimConfig, typed_metrics: bool):
        super().__init__()
        # from_pretrained returns eval mode and Lightning keeps each module's mode: turn dropout on
        self.encoder = encoder.train()
        # BERT's pooler never reaches a loss: frozen, so DDP does not wait for its gradients
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler.requires_grad_(False)
        self.head = head
        self.optim = optim
        self.save_hyperparameters({"optim": asdict(optim), "stage": self.stage_name})
        self.reference = None
        if optim.distill_weight > 0:
            self.reference = copy.deepcopy(encoder).eval().requires_grad_(False)
        self.val_spans = SpanF1(typed=typed_metrics)

    # -- forward ------------------------------------------------------------------------------
    def encode(self, batch: dict, encoder: nn.Module | None = None) -> torch.Tensor:
        out = (encoder or self.encoder)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.encode(batch))

    def distill_loss(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            target = self.encode(batch, self.reference)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden - target) ** 2 * mask).sum() / (mask.sum() * hidden.shape[-1])

    # -- steps --------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        hidden = self.encode(batch)
        loss = self.head.loss(self.head(hidden), batch)
        self.log(f"{self.stage_name}/train/task_loss", loss, prog_bar=False)
        if self.reference is not None:
            distill = self.distill_loss(hidden, batch)
            self.log(f"{self.stage_name}/train/distill_loss", distill)
            loss = loss + self.optim.distill_weight * distill
        self.log(f"{self.stage_name}/train/loss", loss, prog_bar=True)
        self.log(f"{self.stage_name}/train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        loss = self.head.loss(logits, batch)
        self.log(f"{self.stage_name}/val/loss", loss, batch_size=len(batch["spans"]), sync_dist=True)
        self.val_spans.update(*self.scored_spans(self.head.decode(logits, batch), batch["spans"]))

    def scored_spans(self, predicted: list, gold: list) -> tuple[list, list]:
        """The (predicted, gold) spans a metric sees; a stage with partial labels filters here."""
        return predicted, gold

    def on_validation_epoch_end(self) -> None:
        scores = self.val_spans.compute()
        self.val_spans.reset()
        for name, value in scores.items():
            self.log(f"{self.stage_name}/val/{name}", value, prog_bar=name == "f1")

    # -- optimisation -------------------------------------------------------------------------
    def head_modules(self) -> list[nn.Module]:
        """The fresh parts trained at `head_lr` (a stage with a second head adds it here)."""
        return [self.head]

    def configure_optimizers(self):
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")

        def groups(module: nn.Module, lr: float) -> list[dict]:
            named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
            return [
                {"params": [p for n, p in named if not n.endswith(no_decay)], "lr": lr},
                {"params": [p for n, p in named if n.endswith(no_decay)], "lr": lr, "weight_decay": 0.0},
            ]

        head_lr = self.optim.head_lr or self.optim.lr
        params = groups(self.encoder, self.optim.lr)
        for head in self.head_modules():
            params += groups(head, head_lr)
        optimizer = torch.optim.AdamW(
            [g for g in params if g["params"]], lr=self.optim.lr, weight_decay=self.optim.weight_decay
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.optim.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
