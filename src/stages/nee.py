"""Stage 2, named entity typing: coarse types (PER, LOC, ORG, MISC, ...) from gazetteer-labelled text.

Gazetteer labels are incomplete and sometimes wrong; `NoiseConfig` picks how NEE copes:

- ``none``: every token outside a typed span is O, unknown-type spans included (the noise left in);
- ``partial``: unknown-type spans (anchors no gazetteer types, and spans the ESI encoder finds that no
  list contains) are not pushed to O: the loss ignores them or marginalises over their type
  (`cofee.models.partial_labels`);
- ``self_training``: ``partial`` plus, from the second epoch on, a teacher (the model as it stands at
  the start of the epoch) relabels a seeded share of the training windows with its confident
  predictions (BOND-style; the official code relabels 10%). See `callbacks/self_training.py`.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from transformers import PreTrainedModel

from cofee.config import NoiseConfig, OptimConfig
from cofee.models.heads import TaggingHead
from cofee.models.partial_labels import (
    allowed_matrix,
    partial_label_nll,
    type_balance_weights,
    without_unknown,
)
from cofee.stages.base import StageModule

log = logging.getLogger(__name__)


class PartialTaggingHead(TaggingHead):
    """A tagger whose loss reads unknown-type labels (ids after the real ones) through `allowed`."""

    def __init__(self, hidden_size: int, scheme: str, types, dropout: float, unknown: str):
        super().__init__(hidden_size, scheme, types, dropout)
        self.register_buffer("allowed", allowed_matrix(scheme, types, unknown), persistent=False)
        self.label_weights: torch.Tensor | None = None  # set from the training data (type_balance)

    def loss(self, logits, batch: dict):
        return partial_label_nll(logits, batch["labels"], self.allowed, self.label_weights)


class NEEModule(StageModule):
    stage_name = "nee"

    def __init__(
        self,
        encoder: PreTrainedModel,
        optim: OptimConfig,
        types: list[str],
        scheme: str = "BIO",
        dropout: float = 0.1,
        noise: NoiseConfig | None = None,
        type_balance: float = 0.0,
    ):
        self.noise = noise or NoiseConfig()
        head = PartialTaggingHead(
            encoder.config.hidden_size, scheme, types, dropout, self.noise.unknown_mode()
        )
        super().__init__(encoder, head, optim, typed_metrics=True)
        self.scheme, self.types, self.type_balance = scheme, list(types), type_balance
        self.save_hyperparameters(
            {"scheme": scheme, "types": list(types), "noise": vars(self.noise), "type_balance": type_balance}
        )

    def on_fit_start(self) -> None:
        # Gazetteers cover types very unevenly (the default data: ~7x more LOC than PER spans); without
        # weights a starved type is rarely predicted at all. Counted on the training windows, so a
        # resumed or multi-process run computes the same weights.
        super().on_fit_start()
        if self.type_balance:
            counts = Counter(s[2] for w in self.trainer.datamodule.train_windows for s in w.spans)
            self.head.label_weights = type_balance_weights(self.scheme, self.types, counts, self.type_balance)
            log.info("nee: label weights %s", dict(zip(self.head.labels, self.head.label_weights.tolist())))

    def scored_spans(self, predicted: list, gold: list) -> tuple[list, list]:
        return without_unknown(predicted, gold)  # dev F1 on typed spans only
