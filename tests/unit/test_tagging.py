import itertools

import pytest
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, IOBES, Entities

from cofee.data.tagging import label_names, spans_to_tags, tags_to_spans


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_round_trip(scheme):
    spans = [(0, 1, "PER"), (2, 5, "LOC"), (5, 6, "ORG")]
    tags = spans_to_tags(spans, 8, scheme)
    assert tags_to_spans(tags, scheme) == spans


def test_bioes_tags():
    assert spans_to_tags([(0, 1, "A"), (1, 4, "B")], 5, "BIOES") == ["S-A", "B-B", "I-B", "E-B", "O"]


def test_label_names_order():
    assert label_names("BIO", ["ENT"]) == ["O", "B-ENT", "I-ENT"]
    assert label_names("BIOES", ["X"]) == ["O", "B-X", "I-X", "E-X", "S-X"]


def test_overlap_is_refused():
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags([(0, 2, "A"), (1, 3, "B")], 4, "BIO")


def _seqeval_strict(tags, scheme):
    """Spans that seqeval's strict mode counts (its Entity.end is exclusive, like ours)."""
    entities = Entities([list(tags)], IOB2 if scheme == "BIO" else IOBES).entities[0]
    return sorted((e.start, e.end, e.tag) for e in entities)


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_strict_decoding_matches_seqeval_on_all_short_sequences(scheme):
    """Every tag sequence of length 4 over two types, valid or not, decodes as seqeval strict does."""
    alphabet = label_names(scheme, ["A", "B"])
    for tags in itertools.product(alphabet, repeat=4):
        assert sorted(tags_to_spans(tags, scheme)) == _seqeval_strict(tags, scheme), tags


def test_lenient_seqeval_differs_on_invalid_input():
    # The default (conlleval) seqeval would accept an I- after O; strict decoding must not.
    tags = ["O", "I-A", "I-A"]
    assert get_entities(tags) == [("A", 1, 2)]
    assert tags_to_spans(tags, "BIO") == []
