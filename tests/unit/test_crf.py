import itertools

import pytest
import torch

from cofee.models.crf import LinearChainCRF


def _brute_force(crf, emissions, length):
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        tags = torch.tensor([list(path) + [0] * (emissions.shape[0] - length)])
        mask = torch.tensor([[1] * length + [0] * (emissions.shape[0] - length)])
        scores[path] = crf.path_score(emissions.unsqueeze(0), tags, mask).item()
    return scores


@pytest.mark.parametrize("length", [1, 2, 4])
def test_partition_and_viterbi_match_brute_force(length):
    torch.manual_seed(length)
    crf = LinearChainCRF(3)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(4, 3)
    mask = torch.tensor([[1] * length + [0] * (4 - length)])
    scores = _brute_force(crf, emissions, length)
    expected_log_z = torch.logsumexp(torch.tensor(list(scores.values())), 0).item()
    assert crf.log_partition(emissions.unsqueeze(0), mask).item() == pytest.approx(expected_log_z, abs=1e-5)
    assert tuple(crf.viterbi(emissions.unsqueeze(0), mask)[0]) == max(scores, key=scores.get)


def test_batched_padding_does_not_change_results():
    torch.manual_seed(0)
    crf = LinearChainCRF(4)
    with torch.no_grad():
        crf.transitions.normal_()
    short, long = torch.randn(1, 2, 4), torch.randn(1, 5, 4)
    batch = torch.zeros(2, 5, 4)
    batch[0, :2], batch[1] = short[0], long[0]
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    paths = crf.viterbi(batch, mask)
    assert paths[0] == crf.viterbi(short, torch.ones(1, 2))[0]
    assert paths[1] == crf.viterbi(long, torch.ones(1, 5))[0]
    tags = torch.tensor([[1, 2, 0, 0, 0], [0, 1, 2, 3, 0]])
    nll = crf.neg_log_likelihood(batch, tags, mask)
    single = crf.neg_log_likelihood(short, tags[:1, :2], torch.ones(1, 2)) + crf.neg_log_likelihood(
        long, tags[1:], torch.ones(1, 5)
    )
    assert nll.item() == pytest.approx(single.item() / 2, abs=1e-5)
    nll.backward()
    assert crf.transitions.grad is not None and crf.transitions.grad.abs().sum() > 0
