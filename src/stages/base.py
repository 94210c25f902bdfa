"""What every stage shares: the encoder, a span head, optimiser and schedule, metrics, logging, and
the forgetting controls (distillation to the starting encoder, a masked-LM loss).

A stage subclass only builds its head and (if needed) its loss; plumbing lives here.
Metric keys read `<stage>/<split>/<metric>`, e.g. `esi/val/f1`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from dataclasses import asdict

import pytorch_lightning as pl
import torch
from torch import nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from cofee.config import OptimConfig, StageOptimConfig
from cofee.models.heads import SpanHead
from cofee.models.metrics import SpanF1
from cofee.models.mlm import MaskedLMHead, MaskingTokens, mask_tokens, masking_generator
from cofee.utils.errors import ConfigError

# Lightning notes on every fit that a module's `transfer_batch_to_device` wins over the data module's
# default; here that is the intent (see StageModule.transfer_batch_to_device), so the note is noise.
warnings.filterwarnings(
    "ignore", message="You have overridden `transfer_batch_to_device` in `LightningModule` but have passed"
)


def fused_kernel(params: Iterable[torch.Tensor]) -> bool:
    """Whether AdamW may take its fused kernel: one pass over all parameters instead of a Python loop
    of about ten tensor ops per parameter. Same update rule, float-rounding apart. The loop's step over a
    MiniLM encoder took a fifth of a fine-tuning step on one CPU core; fused it is 9x faster there and
    2.9x on 2 threads (make bench, `optimizer_step`). Only CPU and CUDA floating tensors have the kernel."""
    params = list(params)
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


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
        # fine-tuning's OptimConfig has no masked-LM keys; a stage's StageOptimConfig does
        self.mlm_head: MaskedLMHead | None = None
        if isinstance(optim, StageOptimConfig) and optim.mlm_weight > 0:
            self.mlm_head = MaskedLMHead(encoder.get_input_embeddings(), encoder.config)
        self.mlm_tokens: MaskingTokens | None = None  # from the data module's tokenizer, at fit start
        self._mlm_added = False  # whether this batch's training step added the masked-LM loss
        self.val_spans = SpanF1(typed=typed_metrics)

    # -- device transfer ----------------------------------------------------------------------
    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Moves a `WindowCollator` batch's tensors and leaves its Python lists (spans, word positions,
        span ids: ints, never tensors) where they are. Lightning's default walks every element of those
        lists on every step; on an H200 that walk cost MiniLM more CPU time than its GPU step
        (benchmarks/gpu_check.py)."""
        if isinstance(batch, dict):
            return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

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

    def mlm_loss(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The masked-LM loss of a second forward pass on a masked copy of the batch. The task loss
        keeps its unmasked input: masking an entity's words would blur its tags, and the head would
        train on inputs it never sees at evaluation. The masks are seeded by the step (the step seed
        `StepSeedCallback` set, epoch, batch, rank), so a resumed run draws the same ones."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        generator = masking_generator(
            ids.device, torch.initial_seed(), self.current_epoch, batch_idx, self.global_rank
        )
        masked, targets = mask_tokens(ids, attention, self.mlm_tokens, self.optim.mlm_probability, generator)
        return self.mlm_head.loss(self.encode({"input_ids": masked, "attention_mask": attention}), targets)

    def with_forgetting_controls(
        self, loss: torch.Tensor, hidden: torch.Tensor, batch: dict, batch_idx: int
    ) -> torch.Tensor:
        """A training step's `loss` plus the enabled forgetting controls, each logged; a stage with its
        own `training_step` calls this with its last hidden states."""
        if self.reference is not None:
            distill = self.distill_loss(hidden, batch)
            self.log(f"{self.stage_name}/train/distill_loss", distill)
            loss = loss + self.optim.distill_weight * distill
        if self.mlm_head is not None:
            mlm = self.mlm_loss(batch, batch_idx)
            self.log(f"{self.stage_name}/train/mlm_loss", mlm)
            loss = loss + self.optim.mlm_weight * mlm
            self._mlm_added = True
        return loss

    # -- steps --------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.mlm_head is None:
            return
        key = f"stages.{self.stage_name}.optim.mlm_weight"
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError(key, "masking needs the tokenizer, and this stage's data module has none")
        try:
            self.mlm_tokens = MaskingTokens.from_tokenizer(tokenizer, self.mlm_head.bias.numel())
        except ValueError as exc:
            raise ConfigError(key, f"{exc}; set it to 0") from None

    def task_loss(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        """The stage's own loss on a batch's last hidden states (a stage with an extra objective adds it)."""
        return self.head.loss(self.head(hidden), batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        hidden = self.encode(batch)
        loss = self.task_loss(hidden, batch)
        self.log(f"{self.stage_name}/train/task_loss", loss, prog_bar=False)
        loss = self.with_forgetting_controls(loss, hidden, batch, batch_idx)
        self.log(f"{self.stage_name}/train/loss", loss, prog_bar=True)
        self.log(f"{self.stage_name}/train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        # a stage whose own training_step skips `with_forgetting_controls` would ignore the key silently
        if self.mlm_head is not None and not self._mlm_added:
            raise ConfigError(
                f"stages.{self.stage_name}.optim.mlm_weight",
                f"the {self.stage_name} stage's training step adds no masked-LM loss; set it to 0",
            )
        self._mlm_added = False

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

    def fresh_modules(self) -> list[nn.Module]:
        """Every part trained at `head_lr`: the stage's heads and the masked-LM head when it is on."""
        return self.head_modules() + ([self.mlm_head] if self.mlm_head is not None else [])

    def fresh_rates(self) -> list[tuple[nn.Module, float]]:
        """Each fresh part with its learning rate: `head_lr` (else `lr`). `optim.cluster_head_lr` is
        the rate of FET's cluster head, which overrides this; any other stage refuses it rather than
        ignore it."""
        if getattr(self.optim, "cluster_head_lr", None) is not None:
            raise ConfigError(
                f"stages.{self.stage_name}.optim.cluster_head_lr",
                f"the {self.stage_name} stage has no cluster head; leave it null",
            )
        head_lr = self.optim.head_lr or self.optim.lr
        return [(head, head_lr) for head in self.fresh_modules()]

    def configure_optimizers(self):
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        seen: set[int] = set()  # a tied parameter (the MLM decoder is the word embedding) goes in once

        def groups(module: nn.Module, lr: float) -> list[dict]:
            named = [(n, p) for n, p in module.named_parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for _, p in named)
            return [
                {"params": [p for n, p in named if not n.endswith(no_decay)], "lr": lr},
                {"params": [p for n, p in named if n.endswith(no_decay)], "lr": lr, "weight_decay": 0.0},
            ]

        params = groups(self.encoder, self.optim.lr)
        for head, lr in self.fresh_rates():
            params += groups(head, lr)
        params = [g for g in params if g["params"]]
        optimizer = torch.optim.AdamW(
            params,
            lr=self.optim.lr,
            weight_decay=self.optim.weight_decay,
            fused=fused_kernel(p for g in params for p in g["params"]),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.optim.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
