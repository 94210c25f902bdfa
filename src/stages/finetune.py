"""Gold NER fine-tuning: typed token classification (optional CRF), strict span evaluation."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel

from cofee.config import OptimConfig
from cofee.models.heads import CRFTaggingHead, TaggingHead
from cofee.models.metrics import bootstrap_f1_interval, span_report
from cofee.stages.base import StageModule


class FinetuneModule(StageModule):
    stage_name = "finetune"

    def __init__(
        self,
        encoder: PreTrainedModel,
        optim: OptimConfig,
        types: Sequence[str],
        scheme: str = "BIO",
        dropout: float = 0.1,
        crf: bool = False,
        bootstrap_samples: int = 1000,
    ):
        head_class = CRFTaggingHead if crf else TaggingHead
        super().__init__(
            encoder, head_class(encoder.config.hidden_size, scheme, list(types), dropout), optim, True
        )
        self.save_hyperparameters({"types": list(types), "scheme": scheme, "dropout": dropout, "crf": crf})
        self.bootstrap_samples = bootstrap_samples
        self._test_pred: list = []
        self._test_gold: list = []
        self.test_report: dict | None = None

    def on_test_epoch_start(self) -> None:
        self._test_pred, self._test_gold = [], []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._test_pred += self.head.decode(self(batch), batch)
        self._test_gold += batch["spans"]

    def on_test_epoch_end(self) -> None:
        report = span_report(self._test_pred, self._test_gold)
        low, high = bootstrap_f1_interval(self._test_pred, self._test_gold, self.bootstrap_samples)
        report["micro"]["f1_ci95"] = [low, high]
        self.test_report = report
        for name, value in report["micro"].items():
            if name != "f1_ci95":
                self.log(f"finetune/test/{name}", value)
        self.log("finetune/test/untyped_f1", report["untyped"]["f1"])
