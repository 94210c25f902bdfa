"""Span vectors from sub-token hidden states, shared by every stage.

A span is a sub-token range `[start, end)` (end exclusive) in one row of a batch of hidden states.
`pool_spans` turns N such ranges into N vectors in one vectorised step: the spans' sub-tokens are
gathered (one `index_select` on the flattened batch) into an [N, L, H] block padded to the longest
span L, then reduced under a mask: a batched [N, 1, L] x [N, L, H] product for sum and mean, a masked
`amax` for max (the scheme of AllenNLP's `batched_span_select`). Sums are direct (no cumulative-sum
cancellation), gradients flow, and every op used is deterministic on GPU under
`torch.use_deterministic_algorithms(True)`. Memory is N x L x H, small for entity spans.

Modes: `mean`, `max`, `sum` (the CoFEE code's default), and `endpoints` (the first and the last
sub-token concatenated, 2H wide).

`span_token_ranges` maps the word-level spans of our batches (`data_modules/batching.py`) onto those
sub-token ranges; see its docstring for the exact convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cofee.config import POOLING_MODES
from cofee.utils.errors import ConfigError


def check_pooling(mode: str, key: str = "pooling") -> None:
    """A `ConfigError` naming `key` when `mode` is not a known pooling mode."""
    if mode not in POOLING_MODES:
        raise ConfigError(key, f"unknown span pooling '{mode}' (known: {', '.join(POOLING_MODES)})")


def pooled_dim(mode: str, hidden_size: int) -> int:
    """Width of a pooled span vector: H, or 2H for `endpoints`."""
    check_pooling(mode)
    return 2 * hidden_size if mode == "endpoints" else hidden_size


def pool_spans(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    starts: torch.Tensor,
    ends: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Pool N sub-token ranges of `hidden` [B, T, H] into [N, H] (or [N, 2H] for `endpoints`).

    `rows`, `starts`, `ends` are [N] integer tensors: span n covers `hidden[rows[n], starts[n]:ends[n]]`
    (end exclusive; every span must hold at least one sub-token). The output keeps `hidden`'s dtype and
    device; no Python loop runs over the spans.
    """
    check_pooling(mode)
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [batch, tokens, hidden], got shape {tuple(hidden.shape)}")
    batch, width, size = hidden.shape
    device = hidden.device
    rows, starts, ends = (torch.as_tensor(t, dtype=torch.long, device=device) for t in (rows, starts, ends))
    if not rows.shape == starts.shape == ends.shape or rows.dim() != 1:
        raise ValueError("rows, starts and ends must be 1-D and of one length")
    n = rows.shape[0]
    if n == 0:
        return hidden.new_zeros((0, pooled_dim(mode, size)))
    lengths = ends - starts
    bad = (lengths < 1) | (starts < 0) | (ends > width) | (rows < 0) | (rows >= batch)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"span {i} covers sub-tokens [{int(starts[i])}, {int(ends[i])}) of row {int(rows[i])} in a "
            f"[{batch}, {width}] batch: spans need 0 <= row < batch and 0 <= start < end <= tokens"
        )
    flat = hidden.reshape(batch * width, size)
    base = rows * width
    if mode == "endpoints":
        both = flat.index_select(0, torch.stack([base + starts, base + ends - 1], dim=1).view(-1))
        return both.view(n, 2 * size)

    longest = int(lengths.max())
    offsets = torch.arange(longest, device=device)
    mask = offsets.unsqueeze(0) < lengths.unsqueeze(1)  # [N, L]
    index = base.unsqueeze(1) + (starts.unsqueeze(1) + offsets).clamp(max=width - 1)  # padding: a real token
    block = flat.index_select(0, index.view(-1)).view(n, longest, size)  # [N, L, H]
    if mode == "max":
        return block.masked_fill(~mask.unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(dim=1)
    weights = mask.to(hidden.dtype)
    if mode == "mean":
        weights = weights / lengths.unsqueeze(1).to(hidden.dtype)
    return torch.bmm(weights.unsqueeze(1), block).squeeze(1)  # [N, 1, L] x [N, L, H]


def span_token_ranges(
    attention_mask: torch.Tensor,
    word_positions: Sequence[Sequence[int]],
    spans: Sequence[Sequence[tuple]],
    suffix_len: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Word-level spans of a `WindowCollator` batch -> (rows, starts, ends) sub-token ranges.

    Conventions (from `cofee.data.alignment`): `word_positions[b][w]` is the index in row b of word w's
    first sub-token; a span is `(start_word, end_word, type)` with `end_word` exclusive. Its sub-token
    range runs from its first word's first sub-token to just before the next word's first sub-token,
    or, for a span that ends on the window's last word, to just before the trailing special tokens:
    `end = real_length - suffix_len`, where `real_length` is the row's `attention_mask` sum. The end is
    exclusive. `suffix_len` is the number of special tokens after the text (1 for BERT's [SEP] and
    RoBERTa's </s>; `len(cofee.data.alignment.special_tokens(tokenizer)[1])` in general).

    The output is in batch order (window by window, each window's spans in order), the order of a
    flattened `span_ids` list; the three tensors are on `attention_mask`'s device.
    """
    lengths = attention_mask.sum(dim=1).tolist()
    rows: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    for row, (positions, window_spans) in enumerate(zip(word_positions, spans)):
        text_end = int(lengths[row]) - suffix_len
        for span in window_spans:
            first, last = int(span[0]), int(span[1])
            if not 0 <= first < last <= len(positions):
                raise ValueError(f"span {tuple(span)} of window {row} is outside its {len(positions)} words")
            rows.append(row)
            starts.append(positions[first])
            ends.append(positions[last] if last < len(positions) else text_end)
    device = attention_mask.device
    return tuple(torch.tensor(v, dtype=torch.long, device=device) for v in (rows, starts, ends))


def pool_batch_spans(hidden: torch.Tensor, batch: dict, mode: str, suffix_len: int = 1) -> torch.Tensor:
    """All spans of a `WindowCollator` batch pooled from `hidden` [B, T, H], in batch order."""
    rows, starts, ends = span_token_ranges(
        batch["attention_mask"], batch["word_positions"], batch["spans"], suffix_len
    )
    return pool_spans(hidden, rows.to(hidden.device), starts.to(hidden.device), ends.to(hidden.device), mode)
