"""Character spans -> sub-word tokens: first sub-token labels, windows for long sentences.

Words are the tokenizer's pre-tokenized words (`word_ids()`), so "Paris's" is `paris ' s` and a span
covers every word it overlaps. A BERT tokenizer with `tokenize_chinese_chars` makes each CJK character
a word of its own (runs of Latin letters or digits stay one word), so Chinese spans map character by
character. Each word is labelled on its first sub-token; other sub-tokens and the special tokens get
-100. A sentence longer than the encoder's limit becomes several windows cut at word
boundaries, never inside a span when that can be avoided; nothing is silently cut.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.data.tagging import Span, spans_to_tags

IGNORE_INDEX = -100


@dataclass
class EncodedWindow:
    input_ids: list[int]
    labels: list[int]  # one per input id; IGNORE_INDEX off first sub-tokens
    word_positions: list[int]  # index in input_ids of each word's first sub-token
    word_char_spans: list[tuple[int, int]]  # character range of each word in the sentence text
    spans: list[Span]  # gold spans over this window's words, end exclusive
    sentence_index: int
    word_offset: int = 0  # index in the sentence of this window's first word
    span_ids: list[int] | None = None  # global ids of `spans` (stage 3 keys pseudo-labels by them)

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


def _pieces_by_word(ids: Sequence[int], word_ids: Sequence[int | None], n_words: int) -> list[list[int]]:
    pieces: list[list[int]] = [[] for _ in range(n_words)]
    for token, word in zip(ids, word_ids):
        if word is not None:
            pieces[word].append(token)
    return pieces


def _windows(
    pieces: Sequence[list[int]],
    word_chars: Sequence[tuple[int, int]],
    spans: Sequence[Span],
    index: int,
    scheme: str,
    label2id: Mapping[str, int],
    specials: tuple[list[int], list[int]],
    budget: int,
    stats: AlignmentStats,
) -> list[EncodedWindow]:
    """Cut one sentence's words into windows and label each word on its first sub-token."""
    prefix, suffix = specials
    tags = spans_to_tags(spans, len(pieces), scheme)
    stats.sentences += 1
    stats.spans += len(spans)
    windows = []
    for w_start, w_end in _window_cuts([len(p) for p in pieces], spans, budget):
        tokens, labels, positions = [], [], []
        for w in range(w_start, w_end):
            word_pieces = pieces[w]
            if len(word_pieces) > budget:
                stats.truncated_words += 1
                word_pieces = word_pieces[:budget]
            positions.append(len(prefix) + len(tokens))
            labels.append(label2id[tags[w]])
            labels.extend([IGNORE_INDEX] * (len(word_pieces) - 1))
            tokens.extend(word_pieces)
        window_spans = []
        for start, end, kind in spans:
            if start >= w_start and end <= w_end:
                window_spans.append((start - w_start, end - w_start, kind))
            elif start < w_end and end > w_start:
                stats.split_spans += 1
        windows.append(
            EncodedWindow(
                input_ids=prefix + tokens + suffix,
                labels=[IGNORE_INDEX] * len(prefix) + labels + [IGNORE_INDEX] * len(suffix),
                word_positions=positions,
                word_char_spans=list(word_chars[w_start:w_end]),
                spans=window_spans,
                sentence_index=index,
                word_offset=w_start,
            )
        )
        stats.windows += 1
    return windows


def _budget(tokenizer: PreTrainedTokenizerBase, max_length: int) -> tuple[tuple[list[int], list[int]], int]:
    specials = special_tokens(tokenizer)
    budget = max_length - len(specials[0]) - len(specials[1])
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room besides special tokens")
    return specials, budget


def encode_sentences(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    char_spans: Sequence[Sequence[tuple[int, int, str]]],
    scheme: str,
    label2id: Mapping[str, int],
    max_length: int,
    stats: AlignmentStats | None = None,
) -> list[EncodedWindow]:
    """Raw text with character spans: words are the tokenizer's pre-tokenized words."""
    stats = stats if stats is not None else AlignmentStats()
    specials, budget = _budget(tokenizer, max_length)
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    windows: list[EncodedWindow] = []
    for index in range(len(texts)):
        offsets = encoded["offset_mapping"][index]
        word_ids = encoded.word_ids(index)
        n_words = max((w for w in word_ids if w is not None), default=-1) + 1
        word_chars = [(-1, -1)] * n_words
        for t, w in enumerate(word_ids):
            if w is not None:
                start = offsets[t][0] if word_chars[w][0] < 0 else word_chars[w][0]
                word_chars[w] = (start, offsets[t][1])
        word_chars = _with_trailing_marks(texts[index], word_chars)
        pieces = _pieces_by_word(encoded["input_ids"][index], word_ids, n_words)
        spans = char_spans_to_word_spans(word_chars, char_spans[index], stats)
        windows += _windows(pieces, word_chars, spans, index, scheme, label2id, specials, budget, stats)
    return windows


def _with_trailing_marks(text: str, word_chars: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each word's range grown over the combining marks right after it: a tokenizer that strips
    accents gives NFD "e\u0301" the offsets of "e" alone, and a span would lose its accent."""
    grown = []
    for w, (start, end) in enumerate(word_chars):
        limit = word_chars[w + 1][0] if w + 1 < len(word_chars) else len(text)
        while start >= 0 and end < limit and unicodedata.category(text[end]).startswith("M"):
            end += 1
        grown.append((start, end))
    return grown


def encode_pretokenized(
    tokenizer: PreTrainedTokenizerBase,
    token_lists: Sequence[Sequence[str]],
    span_lists: Sequence[Sequence[Span]],
    scheme: str,
    label2id: Mapping[str, int],
    max_length: int,
    stats: AlignmentStats | None = None,
) -> list[EncodedWindow]:
    """Gold tokens with token spans (CoNLL): every gold token is one word, so predictions map back
    one to one. A token the tokenizer turns into nothing (a stray control character) becomes [UNK]."""
    stats = stats if stats is not None else AlignmentStats()
    specials, budget = _budget(tokenizer, max_length)
    encoded = tokenizer([list(t) for t in token_lists], is_split_into_words=True, add_special_tokens=False)
    windows: list[EncodedWindow] = []
    for index, tokens in enumerate(token_lists):
        pieces = _pieces_by_word(encoded["input_ids"][index], encoded.word_ids(index), len(tokens))
        pieces = [p or [tokenizer.unk_token_id] for p in pieces]
        word_chars, cursor = [], 0
        for token in tokens:  # offsets in the tokens joined by single spaces
            word_chars.append((cursor, cursor + len(token)))
            cursor += len(token) + 1
        windows += _windows(
            pieces, word_chars, list(span_lists[index]), index, scheme, label2id, specials, budget, stats
        )
    return windows
