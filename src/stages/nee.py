"""Stage 2, named entity typing: coarse types (PER, LOC, ORG, MISC, ...) from gazetteer-labelled text.

Gazetteer labels are incomplete and sometimes wrong; `NoiseConfig` picks how NEE copes:

- ``none``: every token outside a typed span is O, unknown-type spans included (the noise left in);
- ``partial``: unknown-type spans (anchors no gazetteer types, and spans the ESI encoder finds that no
  list contains) are not pushed to O: the loss ignores them or marginalises over their type
  (`cofee.partial_labels`);
- ``self_training``: ``partial`` plus, from the second epoch on, a teacher (the model as it stands at
  the start of the epoch) relabels a seeded share of the training windows with its confident
  predictions (BOND-style; the official code relabels 10%). See `callbacks/self_training.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedModel

from cofee.heads import TaggingHead
from cofee.partial_labels import allowed_matrix, partial_label_nll, without_unknown

from .base import OptimConfig, StageModule

NOISE_STRATEGIES = ("none", "partial", "self_training")


@dataclass
class NoiseConfig:
    strategy: str = "partial"
    unknown: str = "marginal"  # partial / self_training: ignore | marginal
    esi_spans: bool = True  # spans the parent's ESI head predicts and no gazetteer types are unknown too
    relabel_rate: float = 0.1  # self_training: share of training windows the teacher relabels per round
    relabel_threshold: float = 0.9  # self_training: a word is relabelled when the teacher is this sure

    def unknown_mode(self) -> str:
        return "outside" if self.strategy == "none" else self.unknown


class PartialTaggingHead(TaggingHead):
    """A tagger whose loss reads unknown-type labels (ids after the real ones) through `allowed`."""

    def __init__(self, hidden_size: int, scheme: str, types, dropout: float, unknown: str):
        super().__init__(hidden_size, scheme, types, dropout)
        self.register_buffer("allowed", allowed_matrix(scheme, types, unknown), persistent=False)

    def loss(self, logits, batch: dict):
        return partial_label_nll(logits, batch["labels"], self.allowed)


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
    ):
        self.noise = noise or NoiseConfig()
        head = PartialTaggingHead(
            encoder.config.hidden_size, scheme, types, dropout, self.noise.unknown_mode()
        )
        super().__init__(encoder, head, optim, typed_metrics=True)
        self.save_hyperparameters({"scheme": scheme, "types": list(types), "noise": vars(self.noise)})

    def scored_spans(self, predicted: list, gold: list) -> tuple[list, list]:
        return without_unknown(predicted, gold)  # dev F1 on typed spans only
