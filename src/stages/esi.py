"""Stage 1, entity span identification: type-agnostic spans from Wikipedia anchors."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from cofee.config import OptimConfig
from cofee.models.heads import TaggingHead
from cofee.models.span_scorer import SpanScorer
from cofee.stages.base import StageModule

ENTITY_TYPE = "ENT"


class ESIModule(StageModule):
    """The anchor tagger; with `span_weight` > 0 also the span-level objective (`SpanScorer`) on the
    same anchors, weighted into the loss. The scorer is a training aid: the export keeps the tagger."""

    stage_name = "esi"

    def __init__(
        self,
        encoder: PreTrainedModel,
        optim: OptimConfig,
        scheme: str = "BIO",
        dropout: float = 0.1,
        span_weight: float = 0.0,
        span_max_width: int = 8,
        suffix_len: int = 1,
    ):
        head = TaggingHead(encoder.config.hidden_size, scheme, [ENTITY_TYPE], dropout)
        super().__init__(encoder, head, optim, typed_metrics=False)
        self.span_weight = span_weight
        self.suffix_len = suffix_len
        self.span_scorer = (
            SpanScorer(encoder.config.hidden_size, span_max_width, dropout) if span_weight > 0 else None
        )
        self.save_hyperparameters(
            {
                "scheme": scheme,
                "dropout": dropout,
                "span_weight": span_weight,
                "span_max_width": span_max_width,
            }
        )

    def task_loss(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        loss = super().task_loss(hidden, batch)
        if self.span_scorer is None:
            return loss
        span = self.span_scorer.loss(hidden, batch, self.suffix_len)
        self.log(f"{self.stage_name}/train/tag_loss", loss)
        self.log(f"{self.stage_name}/train/span_loss", span)
        return loss + self.span_weight * span

    def head_modules(self) -> list[nn.Module]:
        return [self.head] + ([self.span_scorer] if self.span_scorer is not None else [])
