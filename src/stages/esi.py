"""Stage 1, entity span identification: type-agnostic spans from Wikipedia anchors."""

from __future__ import annotations

from transformers import PreTrainedModel

from cofee.config import OptimConfig
from cofee.models.heads import TaggingHead
from cofee.stages.base import StageModule

ENTITY_TYPE = "ENT"


class ESIModule(StageModule):
    stage_name = "esi"

    def __init__(
        self, encoder: PreTrainedModel, optim: OptimConfig, scheme: str = "BIO", dropout: float = 0.1
    ):
        head = TaggingHead(encoder.config.hidden_size, scheme, [ENTITY_TYPE], dropout)
        super().__init__(encoder, head, optim, typed_metrics=False)
        self.save_hyperparameters({"scheme": scheme, "dropout": dropout})
