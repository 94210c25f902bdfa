import pytest
import torch

from cofee.config import POOLING_MODES
from cofee.data.alignment import encode_sentences, special_tokens
from cofee.data.tagging import label_names
from cofee.data_modules.batching import WindowCollator
from cofee.models.span_pooling import pool_batch_spans, pool_spans, pooled_dim, span_token_ranges
from cofee.utils.errors import ConfigError


def naive(hidden, rows, starts, ends, mode):
    out = []
    for r, s, e in zip(rows.tolist(), starts.tolist(), ends.tolist()):
        piece = hidden[r, s:e]
        if mode == "mean":
            out.append(piece.mean(0))
        elif mode == "sum":
            out.append(piece.sum(0))
        elif mode == "max":
            out.append(piece.max(0).values)
        else:
            out.append(torch.cat([piece[0], piece[-1]]))
    return torch.stack(out)


def random_spans(batch, width, n, generator):
    rows = torch.randint(0, batch, (n,), generator=generator)
    starts = torch.randint(0, width, (n,), generator=generator)
    lengths = torch.randint(1, 6, (n,), generator=generator)
    ends = torch.minimum(starts + lengths, torch.tensor(width))
    return rows, starts, ends


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pool_spans_matches_a_loop(mode):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 11, 7, generator=g)
    rows, starts, ends = random_spans(4, 11, 40, g)
    # the edges: a one-token span, a span ending on the last token, a whole row
    rows = torch.cat([rows, torch.tensor([0, 3, 2])])
    starts = torch.cat([starts, torch.tensor([5, 8, 0])])
    ends = torch.cat([ends, torch.tensor([6, 11, 11])])
    got = pool_spans(hidden, rows, starts, ends, mode)
    assert got.shape == (43, pooled_dim(mode, 7))
    torch.testing.assert_close(got, naive(hidden, rows, starts, ends, mode), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pool_spans_gradients_and_negative_values(mode):
    hidden = (-torch.rand(2, 5, 3) - 1.0).requires_grad_(True)  # all negative: max must not see padding
    rows, starts, ends = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([3, 5])
    out = pool_spans(hidden, rows, starts, ends, mode)
    torch.testing.assert_close(out, naive(hidden.detach(), rows, starts, ends, mode))
    out.sum().backward()
    assert hidden.grad is not None and hidden.grad[0, 0].abs().sum() == 0  # token 0 of row 0 is outside


def test_pool_spans_errors_and_empty():
    hidden = torch.zeros(2, 4, 3)
    with pytest.raises(ConfigError, match="unknown span pooling 'median'.*mean, max, sum, endpoints"):
        pool_spans(hidden, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), "median")
    with pytest.raises(ValueError, match=r"\[2, 2\)"):
        pool_spans(hidden, torch.tensor([0]), torch.tensor([2]), torch.tensor([2]), "mean")
    with pytest.raises(ValueError, match="start < end <= tokens"):
        pool_spans(hidden, torch.tensor([0]), torch.tensor([2]), torch.tensor([5]), "mean")
    with pytest.raises(ValueError, match="0 <= row < batch"):
        pool_spans(hidden, torch.tensor([2]), torch.tensor([0]), torch.tensor([1]), "mean")
    empty = torch.zeros(0, dtype=torch.long)
    assert pool_spans(hidden, empty, empty, empty, "endpoints").shape == (0, 6)


def test_span_token_ranges_on_collated_windows(tokenizer):
    texts = ["Ada Lovelace met Charles Babbage in London", "Unbelievably tokenised Zurichers"]
    spans = [[(0, 12, "PER"), (17, 32, "PER"), (36, 42, "LOC")], [(0, 12, "X"), (23, 32, "LOC")]]
    label2id = {label: i for i, label in enumerate(label_names("BIO", ["PER", "LOC", "X"]))}
    windows = encode_sentences(tokenizer, texts, spans, "BIO", label2id, 64)
    batch = WindowCollator(tokenizer.pad_token_id)(windows)
    suffix = len(special_tokens(tokenizer)[1])
    rows, starts, ends = span_token_ranges(
        batch["attention_mask"], batch["word_positions"], batch["spans"], suffix
    )
    assert rows.tolist() == [0, 0, 0, 1, 1]
    for r, s, e, (window, span) in zip(
        rows.tolist(), starts.tolist(), ends.tolist(), [(w, sp) for w in windows for sp in w.spans]
    ):
        text = texts[window.sentence_index]
        first_char = window.word_char_spans[span[0]][0]
        last_char = window.word_char_spans[span[1] - 1][1]
        decoded = tokenizer.decode(batch["input_ids"][r, s:e]).replace(" ", "")
        assert decoded.lower() == text[first_char:last_char].replace(" ", "").lower()
    # the last span of each window ends right before the trailing [SEP]
    lengths = batch["attention_mask"].sum(1)
    assert ends[2] == lengths[0] - 1 and ends[4] == lengths[1] - 1
    hidden = torch.randn(*batch["input_ids"].shape, 5)
    torch.testing.assert_close(
        pool_batch_spans(hidden, batch, "mean", suffix), naive(hidden, rows, starts, ends, "mean")
    )


def test_span_token_ranges_rejects_a_span_outside_its_window():
    with pytest.raises(ValueError, match="outside its 2 words"):
        span_token_ranges(torch.ones(1, 5, dtype=torch.long), [[1, 2]], [[(1, 3, "X")]])
