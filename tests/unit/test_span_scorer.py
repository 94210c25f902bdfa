"""ESI's span-level objective (src/models/span_scorer.py): which spans are candidates and positives, and
that its loss trains the encoder towards the gold spans."""

import torch

from cofee.models.span_scorer import SpanScorer, candidate_spans


def test_candidates_are_every_run_up_to_the_width_and_gold_bounds_are_positive():
    candidates, targets = candidate_spans(
        [3, 2], [[(0, 2, "ENT")], [(1, 2, "ENT"), (0, 2, "ENT")]], max_width=2
    )
    assert candidates == [
        [(0, 1, None), (0, 2, None), (1, 2, None), (1, 3, None), (2, 3, None)],
        [(0, 1, None), (0, 2, None), (1, 2, None)],
    ]
    assert targets.tolist() == [0, 1, 0, 0, 0, 0, 1, 1]
    # a gold span wider than max_width is no candidate, so it is no positive either
    _, targets = candidate_spans([4], [[(0, 4, "ENT")]], max_width=3)
    assert targets.sum() == 0 and len(targets) == 4 + 3 + 2


def _batch(words: int = 5) -> dict:
    # one sub-token per word between [CLS] and [SEP]: word w is sub-token w + 1
    return {
        "attention_mask": torch.ones(2, words + 2, dtype=torch.long),
        "word_positions": [list(range(1, words + 1))] * 2,
        "spans": [[(1, 3, "ENT")], [(0, 1, "ENT"), (3, 5, "ENT")]],
    }


def test_the_loss_reaches_the_hidden_states_and_fits_the_gold_spans():
    torch.manual_seed(0)
    scorer = SpanScorer(hidden_size=8, max_width=3, dropout=0.0)
    hidden = torch.randn(2, 7, 8, requires_grad=True)
    batch = _batch()
    first = scorer.loss(hidden, batch)
    first.backward()
    assert hidden.grad is not None and hidden.grad[:, 1:6].abs().sum() > 0
    assert (
        hidden.grad[:, 0].abs().sum() == 0 and hidden.grad[:, 6].abs().sum() == 0
    )  # [CLS], [SEP]: no span ends there
    optimizer = torch.optim.Adam([hidden, *scorer.parameters()], lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        scorer.loss(hidden, batch).backward()
        optimizer.step()
    assert scorer.loss(hidden, batch).item() < 0.1 * first.item()


def test_a_batch_without_words_gives_a_zero_loss_with_a_graph():
    scorer = SpanScorer(hidden_size=4, max_width=2)
    hidden = torch.randn(1, 2, 4, requires_grad=True)
    batch = {"attention_mask": torch.ones(1, 2, dtype=torch.long), "word_positions": [[]], "spans": [[]]}
    loss = scorer.loss(hidden, batch)
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad is not None
