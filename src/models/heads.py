"""Span heads behind one interface: logits from hidden states, a loss, and decoding to spans.

Token tagging (BIO/BIOES on first sub-tokens) is the head today; a start/end pointer head can be
added by implementing the same three methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from cofee.data.alignment import IGNORE_INDEX
from cofee.data.tagging import Span, label_names, tags_to_spans


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
        self.types = list(types)
        self.labels = label_names(scheme, types)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def spec(self) -> dict:
        """What `build_head` needs to rebuild this head (stored in encoder exports)."""
        kind = next(HEAD_KINDS_BY_CLASS[c] for c in type(self).__mro__ if c in HEAD_KINDS_BY_CLASS)
        return {"kind": kind, "scheme": self.scheme, "types": self.types}

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


def gather_words(
    values: torch.Tensor, word_positions: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick each word's first sub-token row: [B, T, ...] -> [B, W, ...] plus a [B, W] word mask."""
    width = max(1, max(len(p) for p in word_positions))
    index = torch.zeros(len(word_positions), width, dtype=torch.long, device=values.device)
    mask = torch.zeros(len(word_positions), width, dtype=torch.bool, device=values.device)
    for row, positions in enumerate(word_positions):
        index[row, : len(positions)] = torch.tensor(positions, dtype=torch.long)
        mask[row, : len(positions)] = True
    rows = torch.arange(len(word_positions), device=values.device).unsqueeze(1)
    return values[rows, index], mask


class CRFTaggingHead(TaggingHead):
    """The tagger's emissions scored by a linear-chain CRF over words (first sub-tokens)."""

    def __init__(self, hidden_size: int, scheme: str, types: Sequence[str], dropout: float = 0.1):
        super().__init__(hidden_size, scheme, types, dropout)
        from cofee.models.crf import LinearChainCRF

        self.crf = LinearChainCRF(len(self.labels))

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        emissions, mask = gather_words(logits, batch["word_positions"])
        tags, _ = gather_words(batch["labels"], batch["word_positions"])
        mask[:, 0] = True  # an empty window still needs one step; its tag is O (index 0)
        return self.crf.neg_log_likelihood(emissions, tags.clamp(min=0), mask)

    def decode(self, logits: torch.Tensor, batch: dict) -> list[list[Span]]:
        emissions, mask = gather_words(logits, batch["word_positions"])
        mask[:, 0] = True
        paths = self.crf.viterbi(emissions, mask)
        return [
            tags_to_spans([self.labels[t] for t in path[: len(positions)]], self.scheme)
            for path, positions in zip(paths, batch["word_positions"])
        ]


HEAD_CLASSES: dict[str, type[TaggingHead]] = {"tagging": TaggingHead, "crf": CRFTaggingHead}
HEAD_KINDS_BY_CLASS = {cls: kind for kind, cls in HEAD_CLASSES.items()}


def build_head(spec: dict, hidden_size: int, dropout: float = 0.1) -> TaggingHead:
    """Rebuild a head from its `spec()` (weights are loaded separately)."""
    return HEAD_CLASSES[spec["kind"]](hidden_size, spec["scheme"], spec["types"], dropout)
