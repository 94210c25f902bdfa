import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from cofee.data.tagging import tags_to_spans
from cofee.models.metrics import SpanF1

GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC", "O"],
    ["O", "B-ORG", "I-ORG", "I-ORG", "O", "B-PER"],
    ["B-LOC", "O", "O"],
]
PRED = [
    ["B-PER", "I-PER", "O", "B-ORG", "O"],  # type error on the second span
    ["O", "B-ORG", "I-ORG", "O", "O", "B-PER"],  # boundary error
    ["I-LOC", "O", "B-PER"],  # invalid I- start (strict: no entity), spurious PER
]


def test_span_f1_equals_seqeval_strict():
    metric = SpanF1(typed=True)
    metric.update([tags_to_spans(t, "BIO") for t in PRED], [tags_to_spans(t, "BIO") for t in GOLD])
    scores = metric.compute()
    kwargs = {"mode": "strict", "scheme": IOB2}
    assert scores["f1"].item() == pytest.approx(f1_score(GOLD, PRED, **kwargs))
    assert scores["precision"].item() == pytest.approx(precision_score(GOLD, PRED, **kwargs))
    assert scores["recall"].item() == pytest.approx(recall_score(GOLD, PRED, **kwargs))
    assert "PER" in classification_report(GOLD, PRED, **kwargs)


def test_untyped_counts_boundaries_only():
    metric = SpanF1(typed=False)
    metric.update([[(0, 2, "A")]], [[(0, 2, "B"), (3, 4, "B")]])
    scores = metric.compute()
    assert scores["precision"].item() == 1.0 and scores["recall"].item() == 0.5
