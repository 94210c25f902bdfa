"""Span heads behind one interface: logits from hidden states, a loss, and decoding to spans.

Token tagging (BIO/BIOES on first sub-tokens) is the head today; a start/end pointer head can be
added by implementing the same three methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from .alignment import IGNORE_INDEX
from .tagging import Span, label_names, tags_to_spans


class SpanHead(nn.Module, ABC):
    @abstractmethod
    def forward(self, hidden: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor: ...

    @abstractmethod
    def decode(self, logits: torch.Tensor, batch: dict) -> list[list[Span]]: ...


class TaggingHead(SpanHead):
    """Linear tagger over first sub-tokens; strict decoding of the chosen scheme."""

    def __init__(self, hidden_size: int, scheme: str, types: Sequence[str], dropout: float = 0.1):
        super().__init__()
        self.scheme = scheme
        self.labels = label_names(scheme, types)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE_INDEX
        )

    def decode(self, logits: torch.Tensor, batch: dict) -> list[list[Span]]:
        best = logits.argmax(-1).tolist()
        return [
            tags_to_spans([self.labels[row[p]] for p in positions], self.scheme)
            for row, positions in zip(best, batch["word_positions"])
        ]
