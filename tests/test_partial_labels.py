import math

import pytest
import torch

from cofee.alignment import IGNORE_INDEX
from cofee.partial_labels import allowed_matrix, extended_labels, partial_label_nll
from cofee.stages.base import OptimConfig
from cofee.stages.nee import NEEModule, NoiseConfig

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
