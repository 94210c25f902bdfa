import numpy as np
import pytest
import torch

from cofee.clustering import SpanFeatures, extract_span_features, load_span_features, save_span_features
from cofee.clustering.features import span_ids_path
from cofee.data.alignment import encode_sentences
from cofee.data.tagging import label_names
from cofee.data_modules.batching import WindowCollator
from cofee.utils.errors import InputFileError

TEXTS = [
    "Ada Lovelace met Charles Babbage in London .",
    "Alan Turing worked at Bletchley Park near Milton Keynes .",
    "Grace Hopper visited Paris and Berlin in 1952 .",
    "Nothing to see here .",
    "Marie Curie was born in Warsaw .",
]
SURFACES = [
    ["Ada Lovelace", "Charles Babbage", "London"],
    ["Alan Turing", "Bletchley Park", "Milton Keynes"],
    ["Grace Hopper", "Paris", "Berlin"],
    [],
    ["Marie Curie", "Warsaw"],
]
SPANS = [
    [(text.index(s), text.index(s) + len(s), "PER") for s in surfaces]
    for text, surfaces in zip(TEXTS, SURFACES)
]


def make_batches(tokenizer, batch_size=2):
    label2id = {label: i for i, label in enumerate(label_names("BIO", ["PER", "LOC"]))}
    windows = encode_sentences(tokenizer, TEXTS, SPANS, "BIO", label2id, 64)
    collate = WindowCollator(tokenizer.pad_token_id)
    batches, next_id = [], 100
    for i in range(0, len(windows), batch_size):
        batch = collate(windows[i : i + batch_size])
        batch["span_ids"] = []
        for spans in batch["spans"]:
            batch["span_ids"].append(list(range(next_id, next_id + len(spans))))
            next_id += len(spans)
        batches.append(batch)
    return batches


def manual(encoder, batches, mode, layer):
    encoder.eval()
    out = []
    with torch.no_grad():
        for batch in batches:
            states = encoder(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=True,
            ).hidden_states[layer]
            for row, (positions, spans) in enumerate(zip(batch["word_positions"], batch["spans"])):
                last = int(batch["attention_mask"][row].sum()) - 1  # the [SEP]
                for first_word, end_word, _ in spans:
                    end = positions[end_word] if end_word < len(positions) else last
                    piece = states[row, positions[first_word] : end]
                    out.append(
                        {
                            "mean": lambda p: p.mean(0),
                            "sum": lambda p: p.sum(0),
                            "endpoints": lambda p: torch.cat([p[0], p[-1]]),
                        }[mode](piece)
                    )
    return torch.stack(out).numpy()


@pytest.mark.parametrize("mode,layer", [("mean", -1), ("sum", -2), ("endpoints", 1)])
def test_features_match_a_manual_forward_and_restore_train_mode(tiny_encoder, tokenizer, mode, layer):
    batches = make_batches(tokenizer)
    tiny_encoder.train()
    tiny_encoder.embeddings.dropout.eval()  # a mixed state must come back as it was
    got = extract_span_features(tiny_encoder, batches, mode, layer=layer, progress=False)
    assert tiny_encoder.training and not tiny_encoder.embeddings.dropout.training
    assert tiny_encoder.encoder.layer[0].attention.self.dropout.training
    assert got.features.dtype == np.float32 and got.span_ids.dtype == np.int64
    assert got.span_ids.tolist() == list(range(100, 111)) and len(got) == 11
    assert got.dim == (64 if mode == "endpoints" else 32)
    np.testing.assert_allclose(got.features, manual(tiny_encoder, batches, mode, layer), rtol=1e-5, atol=1e-6)


def test_eval_mode_stays_and_no_grad(tiny_encoder, tokenizer):
    tiny_encoder.eval()
    got = extract_span_features(tiny_encoder, make_batches(tokenizer), "max", progress=False)
    assert not tiny_encoder.training and len(got) == 11
    assert torch.is_grad_enabled() and all(p.grad is None for p in tiny_encoder.parameters())


def test_memmap_round_trip_is_atomic(tiny_encoder, tokenizer, tmp_path):
    batches = make_batches(tokenizer)
    in_memory = extract_span_features(tiny_encoder, batches, "mean", layer=-2, progress=False)
    path = tmp_path / "feats" / "epoch0.npy"
    on_disk = extract_span_features(tiny_encoder, batches, "mean", layer=-2, out_path=path, progress=False)
    assert isinstance(on_disk.features, np.memmap)
    np.testing.assert_array_equal(on_disk.features, in_memory.features)
    np.testing.assert_array_equal(on_disk.span_ids, in_memory.span_ids)
    reread = load_span_features(path)
    np.testing.assert_array_equal(np.asarray(reread.features), in_memory.features)
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch0.npy", "epoch0.span_ids.npy"]
    assert np.load(path).shape == (11, 32)

    # a failure mid-way leaves the previous files untouched and no temporary files behind
    bad = make_batches(tokenizer)
    bad[1]["span_ids"][0] = bad[1]["span_ids"][0][:-1]
    with pytest.raises(ValueError, match="one id per span"):
        extract_span_features(tiny_encoder, bad, "max", out_path=path, progress=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch0.npy", "epoch0.span_ids.npy"]
    np.testing.assert_array_equal(load_span_features(path).features, in_memory.features)


def test_save_load_and_mismatch_errors(tmp_path):
    feats = SpanFeatures(np.arange(12, dtype=np.float32).reshape(4, 3), np.array([7, 3, 9, 1]))
    path = save_span_features(feats, tmp_path / "f.npy")
    loaded = load_span_features(path, mmap=False)
    np.testing.assert_array_equal(loaded.features, feats.features)
    np.testing.assert_array_equal(loaded.span_ids, feats.span_ids)
    np.save(span_ids_path(path), np.arange(3))
    with pytest.raises(InputFileError, match="do not match span ids"):
        load_span_features(path)
    with pytest.raises(InputFileError, match="not found"):
        load_span_features(tmp_path / "missing.npy")


def test_no_spans_gives_empty_features(tiny_encoder, tokenizer):
    batches = make_batches(tokenizer)
    for batch in batches:
        batch["spans"] = [[] for _ in batch["spans"]]
        batch["span_ids"] = [[] for _ in batch["span_ids"]]
    got = extract_span_features(tiny_encoder, batches, "endpoints", progress=False)
    assert got.features.shape == (0, 64) and got.span_ids.shape == (0,)


def test_store_keeps_its_own_spans_and_leaves_the_others_pending(tmp_path):
    from cofee.clustering.features import SpanFeatureStore

    store = SpanFeatureStore(10, 4, rank=1, world=3, folder=tmp_path)
    assert store.owned_spans == 3 and len(store) == 10  # spans 1, 4, 7
    ids = torch.tensor([4, 2, 7, 4])
    x = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    store.record(ids, x, epoch=2)
    owned = store.owned()
    assert owned.span_ids.tolist() == [4, 7]
    np.testing.assert_array_equal(np.asarray(owned.features), x[[3, 2]].numpy())  # span 4: the last row
    assert store.epochs.tolist() == [-2, 2, 2] and store.pending == 1
    pending = store.take_pending()
    assert pending["id"].tolist() == [2] and pending["epoch"].tolist() == [2] and store.pending == 0
    with pytest.raises(ValueError, match="does not own"):
        store.apply(np.array([2]), np.zeros((1, 4), np.float32), np.array([0]))

    reopened = SpanFeatureStore.from_state(store.state_dict(), rank=1, world=3)
    np.testing.assert_array_equal(reopened.features.numpy(), store.features.numpy())
    fresh = SpanFeatureStore(10, 4, rank=1, world=3, folder=tmp_path)  # a new store forgets the files
    assert fresh.epochs.tolist() == [-2, -2, -2]


def test_in_memory_store_round_trips_through_its_state():
    from cofee.clustering.features import SpanFeatureStore

    store = SpanFeatureStore(6, 2)
    store.update(SpanFeatures(np.ones((2, 2), np.float32), np.array([5, 0])), epoch=-1)
    state = store.state_dict()
    assert set(state) >= {"features", "epochs"}
    restored = SpanFeatureStore.from_state(state)
    assert torch.equal(restored.features, store.features) and restored.owned().span_ids.tolist() == [0, 5]
    halves = [SpanFeatureStore.from_state(state, rank=r, world=2) for r in range(2)]  # dealt out
    assert [h.owned().span_ids.tolist() for h in halves] == [[0], [5]]
