"""A span-level objective: every candidate word span of up to `max_width` words, scored entity or not.

A tagger learns entity spans token by token; this scores whole spans against the gold spans, as
span-based NER models do, so that the encoder learns where a span begins and where it ends together.
A span's vector is its first and last sub-tokens (the shared `endpoints` pooling); the candidates are
every run of 1 to `max_width` words in a window, and the gold spans among them are the positives (a
gold span longer than `max_width` words is no candidate). The loss is the mean binary cross-entropy
over the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cofee.models.span_pooling import pool_batch_spans


def candidate_spans(word_counts: Sequence[int], gold: Sequence[Sequence[tuple]], max_width: int):
    """Each window's candidate spans `(start, end, None)` (end exclusive, in order of start, then
    width) and a 0/1 target per candidate, in batch order: 1 where a gold span has those bounds."""
    candidates, targets = [], []
    for words, spans in zip(word_counts, gold):
        bounds = {(int(s[0]), int(s[1])) for s in spans}
        window = [(s, e, None) for s in range(words) for e in range(s + 1, min(s + max_width, words) + 1)]
        candidates.append(window)
        targets.extend(float((s, e) in bounds) for s, e, _ in window)
    return candidates, torch.tensor(targets)


class SpanScorer(nn.Module):
    """One logit per candidate span, from its endpoint vectors."""

    def __init__(self, hidden_size: int, max_width: int, dropout: float = 0.1):
        super().__init__()
        self.max_width = max_width
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden_size, 1)

    def loss(self, hidden: torch.Tensor, batch: dict, suffix_len: int = 1) -> torch.Tensor:
        """The mean binary cross-entropy of every candidate span of a `WindowCollator` batch."""
        counts = [len(positions) for positions in batch["word_positions"]]
        candidates, targets = candidate_spans(counts, batch["spans"], self.max_width)
        if not targets.numel():  # windows without words: nothing to score, no gradient
            return hidden.sum() * 0.0
        pooled = pool_batch_spans(hidden, {**batch, "spans": candidates}, "endpoints", suffix_len)
        logits = self.classifier(self.dropout(pooled)).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.device, logits.dtype))
