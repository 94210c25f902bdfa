"""Partial labels: tokens whose entity type is unknown, and a loss that does not push them to O.

Distant supervision from gazetteers is incomplete: an anchor the gazetteer cannot type, or a span the
ESI encoder finds but no list contains, is an entity of *unknown* type. Such spans are encoded with the
pseudo-type ``?`` (``B-?``, ``I-?``, ...: ids after the real labels), and an ``allowed`` matrix says which
real labels each id stands for:

- ``outside``: unknown spans are taught as O (naive distant supervision, the noise left in);
- ``ignore``: their tokens are left out of the loss;
- ``marginal``: the loss marginalises over every real type with the same prefix, so ``B-?`` means
  "B of some type": the model must call the token an entity but may pick its type.

The loss is ``-log sum_{allowed} p(label)``; for an ordinary label that is the cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cofee.config import UNKNOWN_MODES
from cofee.data.alignment import IGNORE_INDEX
from cofee.data.tagging import label_names

UNKNOWN_TYPE = "?"


def extended_labels(scheme: str, types: Sequence[str]) -> list[str]:
    """The real labels of `types`, then the unknown-type labels (`B-?`, `I-?`, ...)."""
    return label_names(scheme, list(types)) + label_names(scheme, [UNKNOWN_TYPE])[1:]


def allowed_matrix(scheme: str, types: Sequence[str], unknown: str) -> torch.Tensor:
    """[extended labels, real labels] bool: which real labels each (extended) label id allows."""
    if unknown not in UNKNOWN_MODES:
        raise ValueError(f"unknown-span mode '{unknown}' is not one of {', '.join(UNKNOWN_MODES)}")
    real = label_names(scheme, list(types))
    extended = extended_labels(scheme, types)
    allowed = torch.zeros(len(extended), len(real), dtype=torch.bool)
    allowed[: len(real), : len(real)] = torch.eye(len(real), dtype=torch.bool)
    for row, label in enumerate(extended[len(real) :], start=len(real)):
        prefix = label.split("-", 1)[0]
        if unknown == "outside":
            allowed[row, 0] = True
        elif unknown == "marginal":
            for col, name in enumerate(real):
                allowed[row, col] = name.split("-", 1)[0] == prefix and name != "O"
        # ignore: an all-False row, the token leaves the loss
    return allowed


def partial_label_nll(
    logits: torch.Tensor, labels: torch.Tensor, allowed: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of -log sum_{allowed} softmax(logits) over tokens that have at least one allowed label.

    `weights` ([real labels]) makes it a weighted mean; a token weighs the mean weight of the labels it
    allows (an ordinary label: its own weight)."""
    flat_logits = logits.flatten(0, 1).float()
    flat_labels = labels.flatten()
    keep = flat_labels != IGNORE_INDEX
    rows = allowed.to(flat_logits.device)[flat_labels.clamp(min=0)]  # [N, L]
    keep &= rows.any(-1)
    if not keep.any():
        return flat_logits.sum() * 0.0  # keeps the graph (and DDP) happy on an all-ignored batch
    log_probs = flat_logits[keep].log_softmax(-1)
    picked = log_probs.masked_fill(~rows[keep], float("-inf")).logsumexp(-1)
    if weights is None:
        return -picked.mean()
    allowed_rows = rows[keep].float()
    token_weights = (allowed_rows @ weights.to(allowed_rows)) / allowed_rows.sum(-1)
    return -(picked * token_weights).sum() / token_weights.sum()


def type_balance_weights(
    scheme: str, types: Sequence[str], span_counts: dict[str, int], power: float, cap: float = 10.0
) -> torch.Tensor:
    """[real labels] loss weights: a type's tags weigh (spans of the most frequent type / its spans)
    ** power, at most `cap`; O and types without spans weigh 1. power 0: all ones."""
    most = max((span_counts.get(t, 0) for t in types), default=0)
    by_type = {t: min(cap, (most / span_counts[t]) ** power) if span_counts.get(t) else 1.0 for t in types}
    names = label_names(scheme, list(types))
    return torch.tensor([1.0 if n == "O" else by_type[n.split("-", 1)[1]] for n in names])


def without_unknown(predicted: Sequence[Sequence], gold: Sequence[Sequence]) -> tuple[list, list]:
    """Score typed spans only: a gold span of unknown type is neither a hit nor a miss, and a
    prediction that overlaps one is not a false positive."""
    kept_pred, kept_gold = [], []
    for pred, spans in zip(predicted, gold):
        unknown = [s for s in spans if s[2] == UNKNOWN_TYPE]
        kept_gold.append([s for s in spans if s[2] != UNKNOWN_TYPE])
        kept_pred.append([p for p in pred if not any(p[0] < u[1] and u[0] < p[1] for u in unknown)])
    return kept_pred, kept_gold
