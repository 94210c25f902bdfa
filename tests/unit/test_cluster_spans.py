"""FET's per-span columns: compact codes that read back as the lists a plain pass over the windows
makes, computed once into an artifact beside the token cache, memory-mapped by every later setup,
and rebuilt when the artifact was never finished."""

import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from cofee.data_modules import cluster_spans
from cofee.data_modules.cluster_spans import ClusterDataModule, code_dtype
from tests.support import NEE_TYPES

# (surface, type, source, fine type): None type -> the unknown type "?", None fine type -> none
ENTITIES = [
    ("Ada Lovelace", "PER", "anchor", "mathematician"),
    ("London", "LOC", "gazetteer", "city"),
    ("Charles Babbage", None, "anchor", None),
    ("Paris", "LOC", "name_pattern", None),
    ("Acme Corp", "ORG", "gazetteer", "company"),
    ("the Nile", "LOC", "anchor", "river"),
    ("Esperanto", "MISC", "anchor", "language"),
    # longer than a window: split across windows
    ("Royal Society for the Promotion of Natural Knowledge of London and of Edinburgh and of Dublin",
     "ORG", "gazetteer", "society"),
]  # fmt: skip
FILLERS = ["met", "near", "and", "visited", "wrote about", "with"]


def labelled_corpus(folder, n_sentences=60):
    """A labelled corpus (cofee-labelled-corpus, one shard): sentences of 1 to 9 entities, the longer
    ones cut into several windows at a short max_length (a span may then be split)."""
    folder.mkdir(parents=True)
    lines = []
    for i in range(n_sentences):
        text, spans = "", []
        for j in range(1 + i % 9):
            surface, kind, source, fine = ENTITIES[(i + 3 * j) % len(ENTITIES)]
            if text:
                text += f" {FILLERS[(i + j) % len(FILLERS)]} "
            spans.append([len(text), len(text) + len(surface), kind, source, fine])
            text += surface
        lines.append(
            json.dumps({"page_id": i // 3, "title": f"Page {i // 3}", "text": text + ".", "spans": spans})
        )
    (folder / "shard-00000.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = {
        "format": "cofee-labelled-corpus",
        "version": 1,
        "shards": [{"file": "shard-00000.jsonl", "sentences": n_sentences}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture
def corpus(tmp_path):
    return labelled_corpus(tmp_path / "labelled")


def _module(tokenizer, corpus, **kwargs) -> ClusterDataModule:
    return ClusterDataModule(
        tokenizer,
        NEE_TYPES,
        SimpleNamespace(labelled_dir=str(corpus)),
        SimpleNamespace(cache_dir=str(corpus.parent / "cache"), num_proc=1),
        max_length=16,
        dev_fraction=0.2,
        **kwargs,
    )


def reference_records(window, records):
    """The plain nested loop: for each span, every corpus span, and the words each one overlaps."""
    chars = window.word_char_spans
    found = []
    for start, end, *_ in window.spans:
        match = None
        for record in records:
            words = [w for w, (ws, we) in enumerate(chars) if ws < record[1] and we > record[0]]
            if words and words[0] == start and words[-1] + 1 == end:
                match = list(record)
                break
        found.append(match)
    return found


def reference_columns(dm):
    """Coarse type, fine type and source of every training span, in span-id order, as lists."""
    coarse, fine, source = [], [], []
    records = dm.record_spans["train"]
    for window in dm.train_windows:
        coarse += [str(span[2]) for span in window.spans]
        for record in reference_records(window, records[window.sentence_index]):
            fine.append(record[4] if record else None)
            source.append(record[3] if record else None)
    return coarse, fine, source


@pytest.fixture
def calls(monkeypatch):
    """How many times the columns were computed (not just opened)."""
    counted = []
    compute = cluster_spans.compute_span_columns

    def counting(*args, **kwargs):
        counted.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(cluster_spans, "compute_span_columns", counting)
    return counted


@pytest.mark.parametrize("sample", [None, 20])
def test_codes_read_back_as_the_lists_of_a_plain_pass(tokenizer, corpus, sample):
    dm = _module(tokenizer, corpus, max_train_sentences=sample)
    dm.setup("fit")
    coarse, fine, source = reference_columns(dm)
    assert dm.num_spans == len(coarse) > 0
    assert list(dm.span_types) == coarse and dm.span_types == coarse
    assert list(dm.span_fine_types) == fine and list(dm.span_sources) == source
    # the corpus has what the columns must tell apart: unknown types, no fine type, split spans
    assert (
        "?" in coarse and None in fine and "mathematician" in fine and {"anchor", "gazetteer"} <= set(source)
    )
    assert dm.stats["train"].split_spans  # each part of a split span keeps its corpus span
    for column in (dm.span_types, dm.span_fine_types, dm.span_sources):
        codes = np.asarray(column.codes)
        assert codes.dtype == np.int8 and codes.shape == (dm.num_spans,)
        assert [column.vocab[c] if c >= 0 else None for c in codes.tolist()] == list(column)
    ids = [i for w in dm.train_windows for i in w.span_ids]
    assert ids == list(range(dm.num_spans))


def test_a_second_setup_opens_the_artifact_instead_of_computing_it(tokenizer, corpus, calls):
    first = _module(tokenizer, corpus)
    first.setup("fit")
    first.setup("fit")  # idempotent
    assert len(calls) == 1
    second = _module(tokenizer, corpus)  # another rank, a resume
    second.setup("fit")
    assert len(calls) == 1
    assert isinstance(second.span_columns.offsets.array, np.memmap)
    assert isinstance(second.span_fine_types.codes.array, np.memmap)
    assert list(second.span_fine_types) == list(first.span_fine_types)
    assert [w.span_ids for w in second.train_windows] == [w.span_ids for w in first.train_windows]
    other_sample = _module(tokenizer, corpus, max_train_sentences=20)
    other_sample.setup("fit")  # other training rows: another artifact
    assert len(calls) == 2 and other_sample.span_columns.folder != second.span_columns.folder


def test_an_artifact_without_its_manifest_is_rebuilt(tokenizer, corpus, calls):
    dm = _module(tokenizer, corpus)
    dm.setup("fit")
    folder = dm.span_columns.folder
    expected = list(dm.span_sources)
    (folder / cluster_spans.MANIFEST).unlink()  # as if the build had died before its last write
    again = _module(tokenizer, corpus)
    again.setup("fit")
    assert len(calls) == 2 and (folder / cluster_spans.MANIFEST).is_file()
    assert list(again.span_sources) == expected
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]  # no leftover temp folder


def test_mapped_columns_pickle_as_their_path(tokenizer, corpus):
    dm = _module(tokenizer, corpus)
    dm.setup("fit")
    offsets = dm.span_columns.offsets
    np.asarray(offsets)  # mapped now
    restored = pickle.loads(pickle.dumps(offsets))
    assert restored._array is None and restored.path == offsets.path
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(offsets))
    window = pickle.loads(pickle.dumps(dm.train_windows))[3]  # a worker's copy of the view
    assert window.span_ids == dm.train_windows[3].span_ids


def test_codes_take_the_smallest_signed_type_that_holds_minus_one():
    assert code_dtype(0) == code_dtype(128) == np.int8
    assert code_dtype(129) == code_dtype(32768) == np.int16
    assert code_dtype(32769) == np.int32
