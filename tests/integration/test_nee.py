from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cofee.callbacks.self_training import SelfTrainingCallback
from cofee.config import NoiseConfig, OptimConfig
from cofee.data.alignment import EncodedWindow
from cofee.data_modules.batching import WindowCollator
from cofee.data_modules.gazetteer_labelled import GazetteerDataModule
from cofee.models.export import HEAD_WEIGHTS, load_export_head, manifest_hash, read_export_manifest
from cofee.models.partial_labels import extended_labels
from cofee.pipeline.curriculum import run_curriculum
from cofee.stages.nee import NEEModule
from tests.support import NEE_TYPES, nee_cfg

LABEL2ID = {label: i for i, label in enumerate(extended_labels("BIO", NEE_TYPES))}


@pytest.fixture(scope="module")
def curriculum(tmp_path_factory):
    """ESI then NEE (self-training, two short epochs) with the tiny encoder on the synthetic dump."""
    from hydra import compose, initialize_config_module

    root = tmp_path_factory.mktemp("nee")
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        cfg = nee_cfg(
            lambda o: compose(config_name="pretrain", overrides=list(o)),
            root,
            "stages.nee.max_epochs=2",
            "stages.nee.noise.strategy=self_training",
            "stages.nee.noise.relabel_rate=0.5",
            "stages.nee.noise.relabel_threshold=0.0",
            "trainer.limit_train_batches=2",
        )
    return cfg, run_curriculum(cfg)


def test_nee_trains_from_the_esi_export_and_exports_its_head(curriculum):
    cfg, results = curriculum
    nee = results["nee"]
    export = f"{cfg.paths.output_dir}/nee/encoder"
    assert nee["stage"] == "nee" and nee["global_step"] == 4  # 2 epochs x 2 batches
    assert nee["parent"] == manifest_hash(read_export_manifest(f"{cfg.paths.output_dir}/esi/encoder"))
    assert nee["head"] == {"kind": "tagging", "scheme": "BIO", "types": NEE_TYPES}
    head = load_export_head(export, hidden_size=32)
    assert head is not None and head.classifier.out_features == len(NEE_TYPES) * 2 + 1
    assert "nee/val/f1" in nee["metrics"] and "nee/train/relabelled_words" in nee["metrics"]
    assert nee["data_counts"]["sentences"] > 0


def test_rerun_of_a_finished_nee_is_skipped(curriculum):
    cfg, results = curriculum
    again = run_curriculum(cfg)
    assert again["nee"]["created"] == results["nee"]["created"]


def test_export_without_head_file_loads_as_none(curriculum, tmp_path):
    import shutil

    cfg, _ = curriculum
    copy = tmp_path / "copy"
    shutil.copytree(f"{cfg.paths.output_dir}/nee/encoder", copy)
    (copy / HEAD_WEIGHTS).unlink()
    assert load_export_head(copy, hidden_size=32) is None


def test_datamodule_keeps_typed_and_unknown_anchor_spans(curriculum, tokenizer):
    cfg, _ = curriculum
    dm = GazetteerDataModule(
        tokenizer, NEE_TYPES, cfg.data.gazetteer, cfg.data.anchors, dev_fraction=0.2, scheme="BIO"
    )
    dm.setup("fit")
    labels = [label for w in dm.train_windows for label in w.labels]
    assert labels.count(LABEL2ID["B-LOC"]) > 0 and labels.count(LABEL2ID["B-PER"]) > 0
    assert labels.count(LABEL2ID["B-?"]) > 0  # anchors to the two unlisted people
    assert dm.esi_marked_spans == 0  # no ESI export given


def _window(labels_by_word: list[str]) -> EncodedWindow:
    n = len(labels_by_word)
    labels = [-100] + [LABEL2ID[t] for t in labels_by_word] + [-100]
    return EncodedWindow(
        input_ids=[101] + [2000 + i for i in range(n)] + [102],
        labels=labels,
        word_positions=list(range(1, n + 1)),
        word_char_spans=[(i * 2, i * 2 + 1) for i in range(n)],
        spans=[],
        sentence_index=0,
    )


def test_esi_spans_on_o_words_become_unknown_type(tokenizer):
    dm = GazetteerDataModule(tokenizer, NEE_TYPES, SimpleNamespace(), SimpleNamespace())
    window = _window(["B-PER", "O", "O", "O", "O"])
    marked = dm._mark(window, [(0, 1, "ENT"), (1, 3, "ENT"), (4, 5, "ENT")], LABEL2ID["O"])
    assert marked == 2
    assert window.labels[1:6] == [LABEL2ID[t] for t in ["B-PER", "B-?", "I-?", "O", "B-?"]]
    assert (1, 3, "?") in window.spans and (0, 1, "?") not in window.spans


def test_self_training_relabels_confident_words_and_restores_them(tiny_encoder):
    module = NEEModule(tiny_encoder, OptimConfig(), NEE_TYPES, noise=NoiseConfig(strategy="self_training"))
    with torch.no_grad():
        module.head.classifier.bias[LABEL2ID["B-LOC"]] = 50.0  # a teacher sure that every word is B-LOC
    windows = [_window(["O", "B-?", "O"]) for _ in range(10)]
    callback = SelfTrainingCallback(rate=0.5, threshold=0.9, seed=1)
    changed = callback._relabel(module, windows, [0, 3, 7], WindowCollator(0))
    assert changed == 9 and sorted(callback.relabelled) == [0, 3, 7]
    assert windows[3].labels[1:4] == [LABEL2ID["B-LOC"]] * 3 and windows[1].labels[1] == LABEL2ID["O"]
    assert module.training  # the module's mode is restored

    fresh = [_window(["O", "B-?", "O"]) for _ in range(10)]
    restored = SelfTrainingCallback(rate=0.5, threshold=0.9, seed=1)
    restored.load_state_dict(callback.state_dict())
    restored.on_train_start(SimpleNamespace(datamodule=SimpleNamespace(train_windows=fresh)), module)
    assert [w.labels for w in fresh] == [w.labels for w in windows]

    unsure = SelfTrainingCallback(rate=0.5, threshold=1.1, seed=1)
    assert unsure._relabel(module, [_window(["O"])], [0], WindowCollator(0)) == 0


def test_esi_cross_evaluation_scores_an_export_on_a_corpus_dev_split(curriculum, tmp_path):
    """`cofee-report report=esi_repeats`: the figure it writes for an export on its own corpus is
    the dev span F1 the ESI run logged (same pages, same encoding, same metric)."""
    from cofee.experiments.esi_eval import cross_table

    cfg, results = curriculum
    export = Path(cfg.paths.output_dir) / "esi" / "encoder"
    anchors = cfg.data.anchors
    table = cross_table(
        [("tiny", str(export))],
        [("plain", anchors.corpus_dir)],
        dev_fraction=anchors.dev_fraction,
        max_length=anchors.max_length,
    )
    row = [line for line in table.splitlines() if line.startswith("| tiny | plain |")]
    assert len(row) == 1
    f1 = float(row[0].split("|")[6].split()[0])
    assert f1 == pytest.approx(results["esi"]["metrics"]["esi/val/f1"], abs=5e-4)


def test_parent_spans_are_built_once_per_export_and_reused(curriculum, tokenizer, monkeypatch):
    """The ESI-span pass is an artifact under the token cache (keyed by the export's manifest hash and
    the cache): a second data module (a resume, another rank) reads it instead of running the head."""
    cfg, _ = curriculum
    export = Path(cfg.paths.output_dir) / "esi" / "encoder"

    def data_module():
        return GazetteerDataModule(
            tokenizer, NEE_TYPES, cfg.data.gazetteer, cfg.data.anchors, esi_export=export, dev_fraction=0.2
        )

    first = data_module()
    first.setup("fit")
    entry = first.manifest_entry()
    assert entry["parent_spans"]["parent"] == manifest_hash(read_export_manifest(export))
    assert entry["parent_spans"]["marked"] == first.esi_marked_spans
    folder = first.cache / "parent_spans" / entry["parent_spans"]["key"]
    assert (folder / "manifest.json").is_file()
    marked = [(w.labels, w.spans) for w in first.train_windows]

    def no_head_pass(*args, **kwargs):
        raise AssertionError("the parent head ran again")

    monkeypatch.setattr(GazetteerDataModule, "mark_esi_spans", no_head_pass)
    again = data_module()
    again.setup("fit")
    assert again.esi_marked_spans == first.esi_marked_spans
    assert [(w.labels, w.spans) for w in again.train_windows] == marked
    assert again.sampling["key"] == "max_train_sentences" and again.sampling["sentences"] > 0
