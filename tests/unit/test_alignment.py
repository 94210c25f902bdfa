from cofee.data.alignment import (
    IGNORE_INDEX,
    AlignmentStats,
    encode_pretokenized,
    encode_sentences,
    special_tokens,
)
from cofee.data.tagging import label_names, tags_to_spans

LABELS = {name: i for i, name in enumerate(label_names("BIO", ["ENT"]))}
ID2LABEL = {i: name for name, i in LABELS.items()}


def _word_tags(window):
    return [ID2LABEL[window.labels[p]] for p in window.word_positions]


def test_first_subtoken_labels_and_exact_words(tokenizer):
    text = "Schwarzenegger visited São Paulo's zoo."
    spans = [(0, 14, "ENT"), (23, 32, "ENT")]  # "Schwarzenegger", "São Paulo"
    (window,) = encode_sentences(tokenizer, [text], [spans], "BIO", LABELS, 64)
    tokens = tokenizer.convert_ids_to_tokens(window.input_ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    # "schwarzenegger" is several word pieces: only the first carries a label
    first = window.word_positions[0]
    assert window.labels[first] == LABELS["B-ENT"]
    assert tokens[first + 1].startswith("##") and window.labels[first + 1] == IGNORE_INDEX
    assert window.labels[0] == IGNORE_INDEX and window.labels[-1] == IGNORE_INDEX
    words = [text[s:e] for s, e in window.word_char_spans]
    assert words[:6] == ["Schwarzenegger", "visited", "São", "Paulo", "'", "s"]
    assert _word_tags(window)[:6] == ["B-ENT", "O", "B-ENT", "I-ENT", "O", "O"]
    assert window.spans == [(0, 1, "ENT"), (2, 4, "ENT")]
    assert tags_to_spans(_word_tags(window), "BIO") == window.spans


def test_span_inside_a_word_covers_the_word(tokenizer):
    text = "The Parisian cafe"
    (window,) = encode_sentences(tokenizer, [text], [[(4, 9, "ENT")]], "BIO", LABELS, 32)
    assert window.spans == [(1, 2, "ENT")]


def test_long_sentence_is_windowed_not_cut(tokenizer):
    words = [f"word{i}" for i in range(60)]
    text = " ".join(words)
    # an entity over words 28..31 must not be split by a window boundary
    start = text.index("word28")
    end = text.index("word31") + len("word31")
    stats = AlignmentStats()
    windows = encode_sentences(tokenizer, [text], [[(start, end, "ENT")]], "BIO", LABELS, 32, stats)
    prefix, suffix = special_tokens(tokenizer)
    assert len(windows) > 1
    assert all(len(w) <= 32 for w in windows)
    # every word appears exactly once across the windows, in order
    seen = [text[s:e] for w in windows for s, e in w.word_char_spans]
    assert seen == words
    assert sum(len(w.spans) for w in windows) == 1 and stats.split_spans == 0
    (holder,) = [w for w in windows if w.spans]
    s, e, _ = holder.spans[0]
    assert [text[a:b] for a, b in holder.word_char_spans[s:e]] == words[28:32]
    assert stats.windows == len(windows) and (len(prefix), len(suffix)) == (1, 1)


def test_colliding_spans_are_counted_not_silent(tokenizer):
    stats = AlignmentStats()
    encode_sentences(
        tokenizer, ["Foobar is here"], [[(0, 3, "ENT"), (3, 6, "ENT")]], "BIO", LABELS, 32, stats
    )
    assert stats.dropped_spans == 1 and stats.spans == 1


def test_pretokenized_words_map_one_to_one(tokenizer):
    tokens = ["@paulwalk", "Empire", "State", "Building", "\u200b", "ESB", "!"]
    spans = [(1, 4, "facility"), (5, 6, "facility")]
    labels = {name: i for i, name in enumerate(label_names("BIO", ["facility"]))}
    (window,) = encode_pretokenized(tokenizer, [tokens], [spans], "BIO", labels, 64)
    assert len(window.word_positions) == len(tokens)
    assert window.spans == spans
    # the zero-width token has no sub-token of its own: it is kept as [UNK], not dropped
    assert window.input_ids[window.word_positions[4]] == tokenizer.unk_token_id
    ids = [window.labels[p] for p in window.word_positions]
    assert ids == [labels[t] for t in ["O", "B-facility", "I-facility", "I-facility", "O", "B-facility", "O"]]


def test_windows_carry_their_word_offset(tokenizer):
    tokens = [f"w{i}" for i in range(50)]
    windows = encode_pretokenized(
        tokenizer, [tokens], [[(40, 42, "X")]], "BIO", {"O": 0, "B-X": 1, "I-X": 2}, 24
    )
    offsets = [w.word_offset for w in windows]
    assert offsets[0] == 0 and offsets == sorted(offsets) and len(windows) > 2
    (holder,) = [w for w in windows if w.spans]
    assert holder.word_offset + holder.spans[0][0] == 40
