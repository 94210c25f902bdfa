"""Exact-match span precision / recall / F1 as a torchmetrics Metric (summed across DDP ranks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torchmetrics import Metric

from cofee.data.tagging import Span


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


def span_report(pred: Sequence[Sequence[Span]], gold: Sequence[Sequence[Span]]) -> dict:
    """Micro and per-type P/R/F1 (strict, exact span and type), plus type-agnostic span P/R/F1."""
    types = sorted({s[2] for seq in (*pred, *gold) for s in seq})
    per_type = {}
    for kind in types:
        counts = [
            span_counts([s for s in p if s[2] == kind], [s for s in g if s[2] == kind])
            for p, g in zip(pred, gold)
        ]
        tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))
        per_type[kind] = {**prf(tp, fp, fn), "support": tp + fn}
    micro = [span_counts(p, g) for p, g in zip(pred, gold)]
    untyped = [span_counts(p, g, typed=False) for p, g in zip(pred, gold)]
    return {
        "micro": prf(*(sum(c[i] for c in micro) for i in range(3))),
        "untyped": prf(*(sum(c[i] for c in untyped) for i in range(3))),
        "per_type": per_type,
    }


def interval_text(low: float, high: float) -> str:
    """A 95% interval as the result tables print it: "(0.164-0.236)"."""
    return f"({low:.3f}-{high:.3f})"


def bootstrap_f1_interval(
    pred: Sequence[Sequence[Span]],
    gold: Sequence[Sequence[Span]],
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of micro F1, resampling sentences with replacement."""
    import numpy as np

    counts = np.array([span_counts(p, g) for p, g in zip(pred, gold)], dtype=np.float64).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(samples, len(counts)))
    tp, fp, fn = (counts[:, i][draws].sum(axis=1) for i in range(3))
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(f1, [tail, 100 - tail])
    return float(low), float(high)
