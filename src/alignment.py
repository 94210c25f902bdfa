"""Character spans -> sub-word tokens: first sub-token labels, windows for long sentences.

Words are the tokenizer's pre-tokenized words (`word_ids()`), so "Paris's" is `paris ' s` and a span
covers every word it overlaps. Each word is labelled on its first sub-token; other sub-tokens and the
special tokens get -100. A sentence longer than the encoder's limit becomes several windows cut at word
boundaries, never inside a span when that can be avoided; nothing is silently cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from .tagging import Span, spans_to_tags

IGNORE_INDEX = -100


@dataclass
class EncodedWindow:
    input_ids: list[int]
    labels: list[int]  # one per input id; IGNORE_INDEX off first sub-tokens
    word_positions: list[int]  # index in input_ids of each word's first sub-token
    word_char_spans: list[tuple[int, int]]  # character range of each word in the sentence text
    spans: list[Span]  # gold spans over this window's words, end exclusive
    sentence_index: int

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class AlignmentStats:
    sentences: int = 0
    windows: int = 0
    spans: int = 0
    dropped_spans: int = 0  # no word under the span, or two spans on one word
    split_spans: int = 0  # spans longer than a window (kept only as far as the window goes)
    truncated_words: int = 0  # single words longer than a window


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a single sequence ([CLS] / [SEP],
    <s> / </s>, ...), read off a probe encoding so that any HF tokenizer works."""
    plain = tokenizer("entity", add_special_tokens=False)["input_ids"]
    full = tokenizer("entity")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(f"cannot locate the text inside its special tokens for {type(tokenizer).__name__}")


def char_spans_to_word_spans(
    word_chars: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int, str]], stats: AlignmentStats
) -> list[Span]:
    """Map each character span onto the words it overlaps; drop empty and colliding ones."""
    spans: list[Span] = []
    taken: set[int] = set()
    for start, end, kind in sorted(char_spans):
        words = [i for i, (ws, we) in enumerate(word_chars) if ws < end and we > start]
        if not words or taken.intersection(range(words[0], words[-1] + 1)):
            stats.dropped_spans += 1
            continue
        taken.update(range(words[0], words[-1] + 1))
        spans.append((words[0], words[-1] + 1, kind))
    return spans


def _window_cuts(word_lengths: Sequence[int], spans: Sequence[Span], budget: int) -> list[tuple[int, int]]:
    """Greedy word windows of at most `budget` sub-tokens, moved back to a span start when a cut
    would land inside a span (unless the span alone exceeds the budget)."""
    inside = {}
    for start, end, _ in spans:
        for i in range(start + 1, end):
            inside[i] = start
    cuts, start, n = [], 0, len(word_lengths)
    while start < n:
        end, used = start, 0
        while end < n and used + max(1, min(word_lengths[end], budget)) <= budget:
            used += max(1, min(word_lengths[end], budget))
            end += 1
        end = max(end, start + 1)
        if end < n and end in inside and inside[end] > start:
            end = inside[end]
        cuts.append((start, end))
        start = end
    return cuts


def encode_sentences(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    char_spans: Sequence[Sequence[tuple[int, int, str]]],
    scheme: str,
    label2id: Mapping[str, int],
    max_length: int,
    stats: AlignmentStats | None = None,
) -> list[EncodedWindow]:
    """Tokenise sentences (batched, fast tokenizer) and align their spans; returns all windows."""
    stats = stats if stats is not None else AlignmentStats()
    prefix, suffix = special_tokens(tokenizer)
    before, after = len(prefix), len(suffix)
    budget = max_length - before - after
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room besides special tokens")
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    windows: list[EncodedWindow] = []
    for index in range(len(texts)):
        ids = encoded["input_ids"][index]
        offsets = encoded["offset_mapping"][index]
        word_ids = encoded.word_ids(index)
        first_token: list[int] = []
        word_chars: list[tuple[int, int]] = []
        for t, w in enumerate(word_ids):
            if w is None:
                continue
            if not first_token or word_ids[first_token[-1]] != w:
                first_token.append(t)
                word_chars.append(tuple(offsets[t]))
            else:
                word_chars[-1] = (word_chars[-1][0], offsets[t][1])
        word_lengths = [
            (first_token[i + 1] if i + 1 < len(first_token) else len(ids)) - first_token[i]
            for i in range(len(first_token))
        ]
        spans = char_spans_to_word_spans(word_chars, char_spans[index], stats)
        tags = spans_to_tags(spans, len(word_chars), scheme)
        stats.sentences += 1
        stats.spans += len(spans)
        for w_start, w_end in _window_cuts(word_lengths, spans, budget):
            tokens, labels, positions = [], [], []
            for w in range(w_start, w_end):
                pieces = ids[first_token[w] : first_token[w] + word_lengths[w]]
                if len(pieces) > budget:
                    stats.truncated_words += 1
                    pieces = pieces[:budget]
                positions.append(before + len(tokens))
                labels.append(label2id[tags[w]])
                labels.extend([IGNORE_INDEX] * (len(pieces) - 1))
                tokens.extend(pieces)
            window_spans = []
            for start, end, kind in spans:
                if start >= w_start and end <= w_end:
                    window_spans.append((start - w_start, end - w_start, kind))
                elif start < w_end and end > w_start:
                    stats.split_spans += 1
            windows.append(
                EncodedWindow(
                    input_ids=prefix + tokens + suffix,
                    labels=[IGNORE_INDEX] * before + labels + [IGNORE_INDEX] * after,
                    word_positions=positions,
                    word_char_spans=word_chars[w_start:w_end],
                    spans=window_spans,
                    sentence_index=index,
                )
            )
            stats.windows += 1
    return windows
