"""Property-based tests (hypothesis): alignment, tagging schemes, gazetteer matching, span F1.

Every test runs under `SETTINGS`: derandomized (the same examples on every run, so CI is
reproducible) and without the example database, so no run depends on an earlier one (hypothesis
may still cache source constants under .hypothesis/, which it git-ignores itself). The example
counts keep the whole file to a few seconds.
"""

import warnings

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2, IOBES

from cofee.config import SCHEMES, MatchConfig
from cofee.data.alignment import AlignmentStats, encode_pretokenized, encode_sentences
from cofee.data.gazetteer.build import Gazetteer
from cofee.data.gazetteer.matcher import GazetteerMatcher
from cofee.data.tagging import check_tags, label_names, spans_to_tags, tags_to_spans
from cofee.models.metrics import SpanF1, span_report

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TYPES = ["PER", "LOC", "ORG"]


@st.composite
def span_layout(draw, n, types=TYPES, max_len=None):
    """Random non-overlapping typed spans (end exclusive) over n positions; adjacent spans allowed."""
    spans, i = [], 0
    while i < n:
        if draw(st.booleans()):
            length = draw(st.integers(1, min(n - i, max_len or n)))
            spans.append((i, i + length, draw(st.sampled_from(types))))
            i += length
        else:
            i += 1
    return spans


def _labels(scheme, types=TYPES):
    names = label_names(scheme, types)
    return {name: i for i, name in enumerate(names)}, dict(enumerate(names))


# ---------------------------------------------------------------- 1. character spans -> words
# Units that the encoder's pre-tokenizer (BERT: whitespace, punctuation, one CJK character a word)
# keeps as exactly one word: letter runs (accented, Greek, Cyrillic, Hangul; NFC text, and NFD in
# the combining-mark test below), single punctuation marks, single CJK ideographs (common ones and any of the
# basic block).
LETTERS = list("abcdeXYZ019éüñçøßÉÜŁΩαβжЖд한국")
LATIN_WORD = st.lists(st.sampled_from(LETTERS), min_size=1, max_size=8).map("".join)
PUNCT = st.sampled_from(list(",.;:!?()'\"-/&"))
CJK = st.sampled_from(list("北京大学東京中文字人")) | st.integers(0x4E00, 0x9FFF).map(chr)
UNIT = st.one_of(
    LATIN_WORD.map(lambda u: ("w", u)), PUNCT.map(lambda u: ("p", u)), CJK.map(lambda u: ("c", u))
)

BIO_LABELS, BIO_NAMES = _labels("BIO")
BIOES_LABELS, BIOES_NAMES = _labels("BIOES")


@st.composite
def sentence(draw, max_units=14):
    """(text, character range of each unit, spans over units) of a random sentence."""
    units = draw(st.lists(UNIT, min_size=1, max_size=max_units))
    text, ranges = draw(st.sampled_from(["", " "])), []
    for k, (kind, unit) in enumerate(units):
        if k:
            # two letter runs need whitespace between them; anything else may touch
            must_space = kind == "w" and units[k - 1][0] == "w"
            text += draw(st.sampled_from([" ", "  ", "\n"] if must_space else ["", " "]))
        ranges.append((len(text), len(text) + len(unit)))
        text += unit
    text += draw(st.sampled_from(["", " "]))
    return text, ranges, draw(span_layout(len(units), max_len=4))


def _char_spans(ranges, spans):
    return [(ranges[s][0], ranges[e - 1][1], kind) for s, e, kind in spans]


def _window_tags(window, names):
    return [names[window.labels[p]] for p in window.word_positions]


@SETTINGS
@given(data=st.lists(sentence(), min_size=1, max_size=3))
def test_char_spans_round_trip_through_encode_sentences(tokenizer, data):
    """Word-aligned character spans come back as word spans that cover exactly the span's text, and
    the first-sub-token labels decode to the same spans."""
    texts = [text for text, _, _ in data]
    char_spans = [_char_spans(ranges, spans) for _, ranges, spans in data]
    stats = AlignmentStats()
    windows = encode_sentences(tokenizer, texts, char_spans, "BIO", BIO_LABELS, 512, stats)
    assert [w.sentence_index for w in windows] == list(range(len(texts)))  # one window a sentence
    assert stats.dropped_spans == 0 and stats.split_spans == 0
    for window, (text, ranges, spans), wanted in zip(windows, data, char_spans):
        assert window.word_char_spans == ranges  # (the generator's units are the tokenizer's words)
        assert window.spans == spans
        chars = window.word_char_spans
        covered = [(chars[s][0], chars[e - 1][1], kind) for s, e, kind in window.spans]
        assert [text[a:b] for a, b, _ in covered] == [text[a:b] for a, b, _ in wanted]
        assert covered == wanted
        assert tags_to_spans(_window_tags(window, BIO_NAMES), "BIO") == window.spans


@settings(SETTINGS, max_examples=20)
@example(word="e\u0301")
@given(word=st.lists(st.sampled_from([*"aeXé", "e\u0301", "a\u0308"]), min_size=1, max_size=4).map("".join))
def test_word_ranges_keep_combining_marks_of_nfd_text(tokenizer, word):
    (window,) = encode_sentences(tokenizer, [word], [[(0, len(word), "PER")]], "BIO", BIO_LABELS, 512)
    assert window.word_char_spans == [(0, len(word))]


def _pieces_per_word(tokenizer, text):
    counts: dict[int, int] = {}
    for w in tokenizer(text, add_special_tokens=False).word_ids():
        if w is not None:
            counts[w] = counts.get(w, 0) + 1
    return [counts[w] for w in sorted(counts)]


@settings(SETTINGS, max_examples=80)
@given(data=sentence(max_units=24), max_length=st.integers(3, 16))
def test_windows_keep_every_word_and_every_span_that_fits(tokenizer, data, max_length):
    """Short windows: every word lands in one window, in order; a span is split across windows only
    when its words alone (each cut to a window) exceed one; kept spans still cover exactly their text."""
    text, ranges, spans = data
    stats = AlignmentStats()
    windows = encode_sentences(
        tokenizer, [text], [_char_spans(ranges, spans)], "BIO", BIO_LABELS, max_length, stats
    )
    budget = max_length - 2  # [CLS] ... [SEP]
    assert all(len(w) <= max_length for w in windows)
    assert [c for w in windows for c in w.word_char_spans] == ranges
    pieces = _pieces_per_word(tokenizer, text)
    kept = sorted((s + w.word_offset, e + w.word_offset, k) for w in windows for s, e, k in w.spans)
    assert kept == [(s, e, k) for s, e, k in spans if sum(min(p, budget) for p in pieces[s:e]) <= budget]
    for w in windows:
        for s, e, _ in w.spans:
            assert (w.word_char_spans[s][0], w.word_char_spans[e - 1][1]) == (
                ranges[s + w.word_offset][0],
                ranges[e - 1 + w.word_offset][1],
            )
    if not stats.split_spans:  # (a split span leaves a labelled part in its windows)
        assert all(tags_to_spans(_window_tags(w, BIO_NAMES), "BIO") == w.spans for w in windows)


PRETOKEN = st.one_of(
    LATIN_WORD,
    PUNCT,
    st.lists(CJK, min_size=1, max_size=3).map("".join),  # a gold token may hold several CJK characters
    st.sampled_from(["\x07", "\u200b"]),  # tokenized into nothing: becomes [UNK], still one word
)


@SETTINGS
@given(
    data=st.lists(PRETOKEN, min_size=1, max_size=12).flatmap(
        lambda tokens: st.tuples(st.just(tokens), span_layout(len(tokens)))
    )
)
def test_pretokenized_tokens_map_one_to_one(tokenizer, data):
    """Gold tokens are words one to one: offsets into the space-joined tokens, spans and labels kept."""
    tokens, spans = data
    (window,) = encode_pretokenized(tokenizer, [tokens], [spans], "BIOES", BIOES_LABELS, 512)
    joined = " ".join(tokens)
    assert [joined[a:b] for a, b in window.word_char_spans] == tokens
    assert window.spans == spans
    assert _window_tags(window, BIOES_NAMES) == spans_to_tags(spans, len(tokens), "BIOES")


# ---------------------------------------------------------------- 2. tagging schemes
SCHEME_TYPES = ["PER", "LOC", "geo-loc"]  # a type may contain '-'


@st.composite
def layout_with_length(draw, types=SCHEME_TYPES, max_n=20):
    n = draw(st.integers(0, max_n))
    return n, draw(span_layout(n, types))


@settings(SETTINGS, max_examples=300)
@given(scheme=st.sampled_from(SCHEMES), layout=layout_with_length(), data=st.data())
def test_spans_to_tags_round_trips_in_every_scheme(scheme, layout, data):
    n, spans = layout
    shuffled = data.draw(st.permutations(spans))  # the input order of the spans does not matter
    tags = spans_to_tags(shuffled, n, scheme)
    assert len(tags) == n
    assert check_tags(tags, scheme) is None
    assert tags_to_spans(tags, scheme) == spans


@st.composite
def scheme_and_tags(draw, max_n=12):
    scheme = draw(st.sampled_from(SCHEMES))
    tags = draw(st.lists(st.sampled_from(label_names(scheme, SCHEME_TYPES[:2])), max_size=max_n))
    return scheme, tags


@settings(SETTINGS, max_examples=400)
@given(case=scheme_and_tags())
def test_valid_tag_sequences_are_exactly_the_encodings_of_spans(case):
    """Any well-formed sequence: check_tags accepts it iff decoding loses nothing (re-encoding the
    decoded spans gives it back); decoding always yields spans that re-encode and decode unchanged."""
    scheme, tags = case
    spans = tags_to_spans(tags, scheme)
    again = spans_to_tags(spans, len(tags), scheme)  # raises on overlapping or out-of-range spans
    assert tags_to_spans(again, scheme) == spans
    assert (check_tags(tags, scheme) is None) == (again == tags)


# ---------------------------------------------------------------- 3. gazetteer vs brute force
VOCAB = [
    "Paris",
    "paris",
    "PARIS",
    "Par",
    "New",
    "York",
    "City",
    "São",
    "Paulo",
    "Zürich",
    "Ωmega",
    "of",
    "2024",
    "a_b",
]
GAZ_TYPES = ["PER", "ORG", "LOC", "MISC", "BETA", "ZETA"]  # the last two are not in the priority list
PRIORITY = ["PER", "ORG", "LOC", "MISC"]
# single separators (any one non-word character) let a multi-word entry match; the others do not
SEPARATORS = [" ", " ", " ", "-", "/", "'", ", ", "  ", ". ", " - "]


@st.composite
def gazetteer_case(draw):
    # a few words per example, and a text made of entries and stray words, so that hits overlap often
    vocab = st.sampled_from(draw(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=5, unique=True)))
    entries = draw(
        st.lists(
            st.tuples(st.lists(vocab, min_size=1, max_size=3), st.sampled_from(GAZ_TYPES)),
            min_size=1,
            max_size=6,
        )
    )
    pieces = st.one_of(vocab.map(lambda w: [w]), st.sampled_from([ws for ws, _ in entries]))
    words = [w for piece in draw(st.lists(pieces, min_size=1, max_size=6)) for w in piece]
    text, positions = draw(st.sampled_from(["", "(", " "])), []
    for k, word in enumerate(words):
        if k:
            text += draw(st.sampled_from(SEPARATORS))
        positions.append((len(text), len(text) + len(word)))
        text += word
    text += draw(st.sampled_from(["", ")", ".", " "]))
    return [(" ".join(ws), kind) for ws, kind in entries], words, positions, text


def brute_force_match(entries, words, positions, ambiguity):
    """The documented rules, from scratch: a hit is a run of whole words equal to an entry's words
    (case-sensitive), consecutive words one separator character apart; the type of a surface under
    several types is the first in PRIORITY (others after it, alphabetically) or None; the longest hit
    is taken first, then the next longest not overlapping a taken one, equal lengths leftmost first."""
    types_of: dict[tuple[str, ...], set[str]] = {}
    for surface, kind in entries:
        types_of.setdefault(tuple(surface.split(" ")), set()).add(kind)
    rank = {t: i for i, t in enumerate(PRIORITY + sorted(set(GAZ_TYPES) - set(PRIORITY)))}
    hits = []
    for i in range(len(words)):
        for j in range(i, len(words)):
            if j > i and positions[j][0] - positions[j - 1][1] != 1:
                break
            kinds = types_of.get(tuple(words[i : j + 1]))
            if kinds:
                if len(kinds) == 1:
                    kind = next(iter(kinds))
                else:
                    kind = None if ambiguity == "unknown" else min(kinds, key=rank.__getitem__)
                hits.append((positions[i][0], positions[j][1], kind))
    taken = []
    for start, end, kind in sorted(hits, key=lambda h: (h[0] - h[1], h[0])):
        if all(end <= s or start >= e for s, e, _ in taken):
            taken.append((start, end, kind))
    return sorted(taken)


@settings(SETTINGS, max_examples=300)
@given(case=gazetteer_case(), ambiguity=st.sampled_from(["priority", "unknown"]))
def test_gazetteer_matcher_equals_brute_force(case, ambiguity):
    entries, words, positions, text = case
    config = MatchConfig(case="sensitive", name_pattern=False, ambiguity=ambiguity, priority=list(PRIORITY))
    matcher = GazetteerMatcher(Gazetteer(entries), config)
    assert matcher.match(text) == brute_force_match(entries, words, positions, ambiguity)


CJK_VOCAB = list("北京大学东")


@st.composite
def cjk_case(draw):
    alphabet = st.sampled_from(
        draw(st.lists(st.sampled_from(CJK_VOCAB), min_size=1, max_size=3, unique=True))
    )
    entries = draw(st.lists(st.text(alphabet, min_size=1, max_size=3), min_size=1, max_size=4))
    pieces = draw(st.lists(alphabet | st.sampled_from(entries), max_size=8))
    return entries, "".join(pieces)


@settings(SETTINGS, max_examples=200)
@given(case=cjk_case())
def test_cjk_entries_match_anywhere(case):
    """CJK entries get no boundary pad: every occurrence of an entry is a hit, longest first."""
    entries, text = case
    matcher = GazetteerMatcher(Gazetteer([(e, "LOC") for e in entries]), MatchConfig(case="sensitive"))
    surfaces = set(entries)
    hits = [(i, j) for i in range(len(text)) for j in range(i + 1, len(text) + 1) if text[i:j] in surfaces]
    taken = []
    for start, end in sorted(hits, key=lambda h: (h[0] - h[1], h[0])):
        if all(end <= s or start >= e for s, e in taken):
            taken.append((start, end))
    assert matcher.match(text) == [(s, e, "LOC") for s, e in sorted(taken)]


# ---------------------------------------------------------------- 4. span F1 vs seqeval strict
@st.composite
def gold_and_pred(draw):
    scheme = draw(st.sampled_from(["BIO", "BIOES"]))
    label = st.sampled_from(label_names(scheme, TYPES))
    gold, pred = [], []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 10))
        if draw(st.booleans()):  # a valid sequence (many entities) or any sequence at all
            g = spans_to_tags(draw(span_layout(n)), n, scheme)
        else:
            g = draw(st.lists(label, min_size=n, max_size=n))
        # the prediction copies the gold tag or replaces it, position by position
        p = [draw(st.one_of(st.just(t), label)) for t in g]
        gold.append(g)
        pred.append(p)
    return scheme, gold, pred


@settings(SETTINGS, max_examples=300)
@given(case=gold_and_pred())
def test_span_f1_equals_seqeval_strict(case):
    scheme, gold, pred = case
    gold_spans = [tags_to_spans(t, scheme) for t in gold]
    pred_spans = [tags_to_spans(t, scheme) for t in pred]
    metric = SpanF1(typed=True)
    metric.update(pred_spans, gold_spans)
    ours = {k: v.item() for k, v in metric.compute().items()}
    micro = span_report(pred_spans, gold_spans)["micro"]
    kwargs = {"mode": "strict", "scheme": IOB2 if scheme == "BIO" else IOBES, "zero_division": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = {
            "precision": precision_score(gold, pred, **kwargs),
            "recall": recall_score(gold, pred, **kwargs),
            "f1": f1_score(gold, pred, **kwargs),
        }
    for key, value in theirs.items():
        assert abs(ours[key] - value) < 1e-6, (key, ours, theirs)
        assert abs(micro[key] - value) < 1e-9, (key, micro, theirs)
