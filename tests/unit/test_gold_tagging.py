"""The IOB1 and BMES schemes added beside BIO/BIOES, and `check_tags` validation."""

import itertools

import pytest
from seqeval.scheme import IOB1, Entities

from cofee.config import SCHEMES
from cofee.data.tagging import check_tags, label_names, parse_tag, spans_to_tags, tags_to_spans


def _all_span_sets(length, types, position=0):
    """Every list of non-overlapping spans over tokens position..length-1 and `types`, in order."""
    sets = [[]]
    for start in range(position, length):
        for end in range(start + 1, length + 1):
            for kind in types:
                sets.extend([(start, end, kind), *rest] for rest in _all_span_sets(length, types, end))
    return sets


def test_schemes_and_label_names():
    assert set(SCHEMES) >= {"BIO", "BIOES", "IOB1", "BMES"}
    assert label_names("IOB1", ["X"]) == ["O", "B-X", "I-X"]
    assert label_names("BMES", ["X"]) == ["O", "B-X", "M-X", "E-X", "S-X"]


def test_iob1_tags():
    spans = [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC"), (5, 6, "PER")]
    assert spans_to_tags(spans, 6, "IOB1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-PER"]


def test_bmes_tags():
    assert spans_to_tags([(0, 1, "A"), (1, 4, "B"), (4, 6, "A")], 6, "BMES") == [
        "S-A", "B-B", "M-B", "E-B", "B-A", "E-A",
    ]  # fmt: skip


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_span_set_round_trips_and_is_valid(scheme):
    for spans in _all_span_sets(5, ["A", "B"]):
        tags = spans_to_tags(spans, 5, scheme)
        assert check_tags(tags, scheme) is None, (spans, tags)
        assert tags_to_spans(tags, scheme) == spans, (spans, tags)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_valid_sequences_are_exactly_the_encoded_ones(scheme):
    """check_tags accepts a tag sequence iff it is the encoding of its own decoding."""
    alphabet = label_names(scheme, ["A", "B"])
    for tags in itertools.product(alphabet, repeat=4):
        canonical = spans_to_tags(tags_to_spans(tags, scheme), 4, scheme) == list(tags)
        assert (check_tags(tags, scheme) is None) == canonical, tags


def test_iob1_decoding_matches_seqeval_strict_on_valid_sequences():
    alphabet = label_names("IOB1", ["A", "B"])
    for tags in itertools.product(alphabet, repeat=4):
        if check_tags(tags, "IOB1") is None:
            expected = sorted((e.start, e.end, e.tag) for e in Entities([list(tags)], IOB1).entities[0])
            assert sorted(tags_to_spans(tags, "IOB1")) == expected, tags


def test_check_tags_messages():
    assert check_tags(["O", "I-PER"], "BIO") == (
        1,
        "'I-PER' after 'O' does not continue a span (BIO needs B-PER first)",
    )
    assert check_tags(["B-LOC", "I-PER"], "BIO")[0] == 1
    assert check_tags(["O", "B-PER"], "IOB1")[0] == 1
    assert check_tags(["I-PER", "B-PER"], "IOB1") is None
    assert check_tags(["B-PER", "O"], "BIOES")[0] == 1
    assert check_tags(["B-PER"], "BIOES")[1].startswith("span of type PER not closed")
    assert check_tags(["O", "M-PER", "E-PER"], "BMES")[0] == 1
    assert check_tags(["B-PER", "S-LOC"], "BMES")[0] == 1
    assert check_tags(["B-PER", "I-PER", "E-PER"], "BMES")[1].startswith("malformed tag 'I-PER'")
    assert check_tags(["X-PER"], "BIO")[1].startswith("malformed tag 'X-PER'")
    assert check_tags(["B-"], "BIO")[1].startswith("malformed tag 'B-'")


def test_parse_tag_keeps_dashes_in_types():
    assert parse_tag("B-geo-loc", "BIO") == ("B", "geo-loc")
    assert parse_tag("O", "BMES") == ("O", "")
    assert parse_tag("PER", "BIO") is None
    assert parse_tag("E-PER", "BIO") is None
