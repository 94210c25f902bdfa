"""Exact-match span precision / recall / F1 as a torchmetrics Metric (summed across DDP ranks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torchmetrics import Metric

from .tagging import Span


def span_counts(pred: Iterable[Span], gold: Iterable[Span], typed: bool = True) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) for one sequence."""
    key = (lambda s: s) if typed else (lambda s: (s[0], s[1]))
    p, g = {key(s) for s in pred}, {key(s) for s in gold}
    return len(p & g), len(p - g), len(g - p)


def prf(tp: float, fp: float, fn: float) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


class SpanF1(Metric):
    full_state_update = False

    def __init__(self, typed: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.typed = typed
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Sequence[Sequence[Span]], gold: Sequence[Sequence[Span]]) -> None:
        for p, g in zip(pred, gold, strict=True):
            tp, fp, fn = span_counts(p, g, self.typed)
            self.tp += tp
            self.fp += fp
            self.fn += fn

    def compute(self) -> dict[str, torch.Tensor]:
        scores = prf(self.tp.item(), self.fp.item(), self.fn.item())
        return {k: torch.tensor(v) for k, v in scores.items()}
