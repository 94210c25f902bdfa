import math

import pytest
import torch

from cofee.config import NoiseConfig, OptimConfig
from cofee.data.alignment import IGNORE_INDEX
from cofee.models.partial_labels import (
    allowed_matrix,
    extended_labels,
    partial_label_nll,
    type_balance_weights,
)
from cofee.stages.nee import NEEModule

TYPES = ["PER", "LOC"]
LABELS = extended_labels("BIO", TYPES)  # O B-PER I-PER B-LOC I-LOC B-? I-?
ID = {label: i for i, label in enumerate(LABELS)}


def test_extended_labels_put_unknown_after_the_real_ones():
    assert LABELS == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-?", "I-?"]


def test_allowed_rows_per_mode():
    marginal = allowed_matrix("BIO", TYPES, "marginal")
    assert marginal.shape == (7, 5)
    assert marginal[ID["B-PER"]].tolist() == [False, True, False, False, False]
    assert marginal[ID["B-?"]].tolist() == [False, True, False, True, False]
    assert marginal[ID["I-?"]].tolist() == [False, False, True, False, True]
    assert allowed_matrix("BIO", TYPES, "outside")[ID["I-?"]].tolist() == [True, False, False, False, False]
    assert not allowed_matrix("BIO", TYPES, "ignore")[ID["B-?"]].any()
    with pytest.raises(ValueError, match="unknown-span mode"):
        allowed_matrix("BIO", TYPES, "drop")


def _batch():
    """One sentence: [CLS] Ada visited Zork [SEP]; 'Ada' is typed PER, 'Zork' an unknown-type span."""
    labels = torch.tensor([[IGNORE_INDEX, ID["B-PER"], ID["O"], ID["B-?"], IGNORE_INDEX]])
    logits = torch.randn(1, 5, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    return logits, labels


def test_ignore_leaves_unknown_tokens_out_of_the_loss():
    logits, labels = _batch()
    loss = partial_label_nll(logits, labels, allowed_matrix("BIO", TYPES, "ignore"))
    expected = torch.nn.functional.cross_entropy(logits[0, 1:3], labels[0, 1:3])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[0, 3].abs().sum() == 0  # the unknown-type token gets no gradient at all


def test_outside_teaches_unknown_tokens_as_o():
    logits, labels = _batch()
    loss = partial_label_nll(logits, labels, allowed_matrix("BIO", TYPES, "outside"))
    as_o = labels.clone()
    as_o[0, 3] = ID["O"]
    expected = torch.nn.functional.cross_entropy(logits[0, 1:4], as_o[0, 1:4])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_marginal_sums_over_the_types_of_the_prefix():
    logits, labels = _batch()
    loss = partial_label_nll(logits, labels, allowed_matrix("BIO", TYPES, "marginal"))
    p = logits[0].detach().softmax(-1)
    per_token = [-math.log(p[1, ID["B-PER"]]), -math.log(p[2, ID["O"]]), -math.log(p[3, 1] + p[3, 3])]
    assert loss.item() == pytest.approx(sum(per_token) / 3, rel=1e-5)


def test_weighted_loss_is_the_weighted_mean_of_the_token_losses():
    logits, labels = _batch()
    weights = torch.tensor([1.0, 4.0, 4.0, 2.0, 2.0])  # O, B-PER, I-PER, B-LOC, I-LOC
    loss = partial_label_nll(logits, labels, allowed_matrix("BIO", TYPES, "marginal"), weights)
    p = logits[0].detach().softmax(-1)
    per_token = [-math.log(p[1, ID["B-PER"]]), -math.log(p[2, ID["O"]]), -math.log(p[3, 1] + p[3, 3])]
    token_weights = [4.0, 1.0, 3.0]  # B-? allows B-PER and B-LOC: the mean of their weights
    expected = sum(w * t for w, t in zip(token_weights, per_token)) / sum(token_weights)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    unweighted = partial_label_nll(logits, labels, allowed_matrix("BIO", TYPES, "marginal"), torch.ones(5))
    assert unweighted.item() == pytest.approx(sum(per_token) / 3, rel=1e-5)


def test_type_balance_weights_starved_types_up_to_a_cap():
    counts = {"PER": 10, "LOC": 1000}
    assert type_balance_weights("BIO", TYPES, counts, 0.0).tolist() == [1.0] * 5
    half = type_balance_weights("BIO", TYPES, counts, 0.5).tolist()
    assert half == pytest.approx([1.0, 10.0, 10.0, 1.0, 1.0])  # sqrt(100) = 10, at the cap
    quarter = type_balance_weights("BIO", TYPES, counts, 0.25).tolist()
    assert quarter == pytest.approx([1.0, 100**0.25, 100**0.25, 1.0, 1.0])
    assert type_balance_weights("BIO", TYPES, {"LOC": 5}, 1.0).tolist() == [1.0] * 5  # PER unseen: 1


def test_an_all_ignored_batch_gives_a_zero_loss_with_a_graph():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, ID["B-?"], ID["I-?"]]])
    loss = partial_label_nll(logits, labels, allowed_matrix("BIO", TYPES, "ignore"))
    assert loss.item() == 0.0
    loss.backward()


def test_nee_dev_metric_skips_unknown_type_spans(tiny_encoder):
    module = NEEModule(tiny_encoder, OptimConfig(), TYPES, noise=NoiseConfig(strategy="partial"))
    predicted = [[(0, 1, "PER"), (3, 4, "LOC"), (5, 6, "LOC")]]
    gold = [[(0, 1, "PER"), (3, 5, "?")]]
    kept_pred, kept_gold = module.scored_spans(predicted, gold)
    # (3, 4) sits on the unknown span: not a false positive; (5, 6) is one
    assert kept_pred == [[(0, 1, "PER"), (5, 6, "LOC")]]
    assert kept_gold == [[(0, 1, "PER")]]


def test_noise_strategy_none_teaches_unknown_as_outside(tiny_encoder):
    module = NEEModule(
        tiny_encoder, OptimConfig(), TYPES, noise=NoiseConfig(strategy="none", unknown="marginal")
    )
    assert module.head.allowed[ID["B-?"]].tolist() == [True, False, False, False, False]
    assert module.head.spec() == {"kind": "tagging", "scheme": "BIO", "types": TYPES}


def test_nee_weighs_its_loss_by_the_training_span_counts(tiny_encoder):
    from types import SimpleNamespace

    windows = [SimpleNamespace(spans=[(0, 1, "LOC")] * 16 + [(2, 3, "PER"), (4, 5, "?")])]
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_windows=windows))
    module = NEEModule(tiny_encoder, OptimConfig(), TYPES, type_balance=0.5)
    module.trainer = trainer
    module.on_fit_start()
    assert module.head.label_weights.tolist() == pytest.approx([1.0, 4.0, 4.0, 1.0, 1.0])
    logits, labels = _batch()
    weighted = module.head.loss(logits, {"labels": labels})
    expected = partial_label_nll(logits, labels, module.head.allowed, torch.tensor([1.0, 4.0, 4.0, 1.0, 1.0]))
    assert weighted.item() == pytest.approx(expected.item())
    plain = NEEModule(tiny_encoder, OptimConfig(), TYPES)
    plain.trainer = trainer
    plain.on_fit_start()
    assert plain.head.label_weights is None
