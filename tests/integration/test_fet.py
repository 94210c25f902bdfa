from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cofee.callbacks.cluster_refresh import ClusterRefreshCallback
from cofee.clustering import ClusterConfig, PseudoLabels, SpanFeatures, TooFewSpansError, derive_seed
from cofee.clustering.features import SpanFeatureStore
from cofee.config import OptimConfig, validate
from cofee.data.alignment import EncodedWindow
from cofee.data_modules.batching import WindowCollator
from cofee.data_modules.cluster_spans import ClusterDataModule, span_records
from cofee.models.export import load_exported_encoder, manifest_hash, read_export_manifest
from cofee.pipeline.curriculum import run_curriculum
from cofee.stages.fet import FETModule
from cofee.utils.errors import CofeeError, ConfigError
from tests.support import NEE_TYPES, PACKAGED_OFF, nee_cfg, user_lists, write_dump

FAST = [
    "stages.nee.max_epochs=1",
    "stages.fet.max_epochs=3",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "logger=none",
]


@pytest.fixture(scope="module")
def curriculum(tmp_path_factory):
    """ESI, NEE, FET (three short epochs: the initial clustering, two refreshes) on the synthetic dump."""
    from hydra import compose, initialize_config_module

    root = tmp_path_factory.mktemp("fet")
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        cfg = nee_cfg(
            lambda o: compose(config_name="pretrain", overrides=list(o)),
            root,
            "curriculum.stages=[esi,nee,fet]",
            *FAST,
        )
    return cfg, run_curriculum(cfg)


def test_fet_trains_from_the_nee_export_and_records_its_clustering(curriculum):
    cfg, results = curriculum
    fet = results["fet"]
    assert fet["stage"] == "fet" and fet["global_step"] == 6
    assert fet["parent"] == manifest_hash(read_export_manifest(f"{cfg.paths.output_dir}/nee/encoder"))
    assert fet["head"] == {"kind": "tagging", "scheme": "BIO", "types": NEE_TYPES}
    clustering = fet["clustering"]
    assert clustering["k"] == 8 and clustering["refreshes"] == 2  # none after the last epoch
    initial, refresh, _ = clustering["history"]
    assert initial["kind"] == "initial" and initial["nmi_prev"] is None and initial["extract_seconds"] >= 0
    assert refresh["kind"] == "refresh" and refresh["after_epoch"] == 0 and 0 <= refresh["nmi_prev"] <= 1
    assert 0 < refresh["share"] < 1 and refresh["sizes"]["k"] == 8
    assert initial["spans"] == refresh["spans"] > 8
    for key in ("fet/cluster/nmi_prev", "fet/cluster/seconds", "fet/cluster/size_max", "fet/val/f1"):
        assert key in fet["metrics"], key


def _cluster_dm(cfg, tokenizer) -> ClusterDataModule:
    return ClusterDataModule(
        tokenizer, NEE_TYPES, cfg.data.gazetteer, cfg.data.anchors, dev_fraction=0.2, batch_size=4
    )


def test_span_ids_are_stable_and_aligned_with_spans(curriculum, tokenizer):
    cfg, _ = curriculum
    dm, again = _cluster_dm(cfg, tokenizer), _cluster_dm(cfg, tokenizer)
    dm.setup("fit")
    dm.setup("fit")  # idempotent: ids are not handed out twice
    again.setup("fit")
    ids = [i for w in dm.train_windows for i in w.span_ids]
    assert ids == list(range(dm.num_spans)) and dm.num_spans > 0
    assert [w.span_ids for w in dm.train_windows] == [w.span_ids for w in again.train_windows]
    assert all(len(w.span_ids) == len(w.spans) for w in dm.train_windows)
    assert dm.span_types == [s[2] for w in dm.train_windows for s in w.spans]
    assert {"LOC", "PER", "?"} <= set(dm.span_types)
    for batch in dm.train_dataloader():  # shuffled batches keep each span with its id
        for spans, span_ids in zip(batch["spans"], batch["span_ids"]):
            assert [dm.span_types[i] for i in span_ids] == [s[2] for s in spans]
    served = sorted(i for b in dm.feature_dataloader() for w in b["span_ids"] for i in w)
    assert served == ids
    assert "span_ids" not in next(iter(dm.val_dataloader()))


def test_span_columns_with_the_parent_marks_read_back_as_a_plain_pass(curriculum, tokenizer):
    """With the ESI export's marks on the windows, the memory-mapped span columns (keyed by the
    parent-span artifact) equal the lists one pass over the windows makes; a marked span has no
    corpus span, so no source and no fine type."""
    cfg, _ = curriculum
    dm = ClusterDataModule(
        tokenizer,
        NEE_TYPES,
        cfg.data.gazetteer,
        cfg.data.anchors,
        esi_export=f"{cfg.paths.output_dir}/esi/encoder",
        dev_fraction=0.2,
        batch_size=4,
    )
    dm.setup("fit")
    assert dm.parent_spans is not None and dm.span_columns.manifest["parent"] == dm.parent_spans["key"]
    records = dm.record_spans["train"]
    coarse, fine, source = [], [], []
    for window in dm.train_windows:
        coarse += [str(span[2]) for span in window.spans]
        for record in span_records(window, records[window.sentence_index]):
            fine.append(record[4] if record else None)
            source.append(record[3] if record else None)
    assert list(dm.span_types) == coarse and dm.num_spans == len(coarse)
    assert list(dm.span_fine_types) == fine and list(dm.span_sources) == source
    assert source.count(None) >= dm.esi_marked_spans > 0


def test_span_records_find_the_corpus_span_with_its_fine_type():
    window = EncodedWindow(
        input_ids=[101, 1, 2, 3, 4, 102],
        labels=[-100, 0, 0, 0, 0, -100],
        word_positions=[1, 2, 3, 4],
        word_char_spans=[(0, 4), (5, 7), (8, 13), (13, 15)],  # "Lady in Paris's"
        spans=[(0, 1, "?"), (2, 3, "LOC"), (1, 2, "?")],
        sentence_index=0,
    )
    records = [[0, 4, None, "anchor", None], [8, 13, "LOC", "gazetteer", "city"]]
    found = span_records(window, records)
    assert found == [records[0], records[1], None]  # the last: a span no corpus span gave


def _module(tiny_encoder, k=3, lam=0.5) -> FETModule:
    return FETModule(
        tiny_encoder, OptimConfig(), NEE_TYPES, k=k, pooling="mean", feature_layer=-2, lambda_cluster=lam
    )


def _batch(tokenizer) -> dict:
    # label ids: O 0, B-LOC 3 (extended_labels("BIO", NEE_TYPES))
    windows = [
        EncodedWindow([101, 2000, 2001, 2002, 102], [-100, 3, 0, 0, -100], [1, 2, 3], [], [(0, 1, "LOC")], 0),
        EncodedWindow(
            [101, 2003, 2004, 102], [-100, 3, 0, -100], [1, 2], [], [(0, 1, "LOC"), (1, 2, "?")], 1
        ),
    ]
    for i, window in enumerate(windows):
        window.span_ids = [10 * i + j for j in range(len(window.spans))]
    return WindowCollator(tokenizer.pad_token_id)(windows)


def test_loss_is_typed_plus_lambda_times_weighted_cluster_ce(tiny_encoder, tokenizer):
    module = _module(tiny_encoder).eval()
    batch = _batch(tokenizer)
    assert batch["span_ids"] == [[0], [10, 11]]
    labels = PseudoLabels(np.array([0, 11]), np.array([2, 1]), np.array([1.0, 3.0, 0.5], dtype=np.float32))
    module.set_pseudo_labels(labels)  # span 10 has no label: left out
    module.features = SpanFeatureStore(12, 32)
    parts = module.step_losses(batch)

    out = module.encoder(**{k: batch[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
    typed = module.head.loss(module.head(out.last_hidden_state), batch)
    layer = out.hidden_states[-2]
    pooled = torch.stack([layer[0, 1:2].mean(0), layer[1, 1:2].mean(0), layer[1, 2:3].mean(0)])
    logp = module.cluster_head(pooled).log_softmax(-1)
    expected_ce = -(0.5 * logp[0, 2] + 3.0 * logp[2, 1]) / (0.5 + 3.0)
    assert parts["typed"].item() == pytest.approx(typed.item(), rel=1e-5)
    assert parts["cluster"].item() == pytest.approx(expected_ce.item(), rel=1e-5)
    assert torch.allclose(module.features.features[[0, 10, 11]], pooled, atol=1e-6)
    assert module.features.epochs[[0, 10, 11]].tolist() == [0, 0, 0] and module.features.epochs[1] == -2

    module.set_pseudo_labels(PseudoLabels(np.array([99]), np.array([0]), np.ones(3, dtype=np.float32)))
    assert module.step_losses(batch)["cluster"].item() == 0.0  # no labelled span: no NaN


def test_fine_type_agreement_reads_the_data_modules_codes():
    """The callback scores the clusters against the fine-type codes (-1: none) as it did against the
    strings: the same NMI and purity, spans without a fine type left out."""
    from cofee.clustering.quality import nmi, purity
    from cofee.data_modules.cluster_spans import CodedColumn

    fine = ["city", None, "river", "city", None, "river", "city", "language"] * 3
    vocab = ["city", "river", "language"]
    codes = np.array([vocab.index(f) if f else -1 for f in fine], dtype=np.int8)
    callback = ClusterRefreshCallback(ClusterConfig(k=3, pca_dim=None), seed=1)
    callback.store = SpanFeatureStore(len(fine), 4)
    datamodule = SimpleNamespace(num_spans=len(fine), span_fine_types=CodedColumn(codes, vocab))
    trainer = SimpleNamespace(datamodule=datamodule, current_epoch=0, default_root_dir=None)
    callback.labels = PseudoLabels(np.arange(len(fine)), np.arange(len(fine)) % 3, np.ones(3, np.float32))
    callback.on_train_start(
        trainer, SimpleNamespace(cluster_head=torch.nn.Linear(4, 3), set_pseudo_labels=lambda labels: None)
    )
    known = [i for i, f in enumerate(fine) if f is not None]
    assigned, truth = np.arange(len(fine))[known] % 3, np.array([fine[i] for i in known])
    assert callback.fine_type_agreement(callback.labels) == {
        "fine_spans": len(known),
        "fine_nmi": round(nmi(assigned, truth), 4),
        "fine_purity": round(purity(assigned, truth), 4),
    }


def test_refresh_reinitialises_the_cluster_head_and_clears_its_optimizer_state(tiny_encoder):
    module = _module(tiny_encoder, k=4)
    callback = ClusterRefreshCallback(ClusterConfig(k=4, pca_dim=None, seed=5), seed=5)
    x = np.random.default_rng(0).normal(size=(40, 32)).astype(np.float32)
    callback.store = SpanFeatureStore(40, 32)
    optimizer = torch.optim.AdamW(module.parameters())
    module.cluster_head(torch.randn(2, 32)).sum().backward()
    optimizer.step()
    assert module.cluster_head.weight in optimizer.state

    local = SpanFeatures(x, np.arange(40))
    first = callback.recluster(module, local, -1, label_epoch=0, optimizers=[optimizer])
    assert first["nmi_prev"] is None and module.cluster_head.weight in optimizer.state  # no re-init at start
    before = module.cluster_head.weight.detach().clone()
    entry = callback.recluster(module, local, 0, label_epoch=1, optimizers=[optimizer])
    assert entry["nmi_prev"] is not None
    assert not torch.equal(module.cluster_head.weight, before)
    assert (
        module.cluster_head.weight not in optimizer.state and module.cluster_head.bias not in optimizer.state
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(5, 1))
        expected = torch.nn.Linear(32, 4)
    assert torch.equal(module.cluster_head.weight, expected.weight)
    assert torch.equal(module.cluster_head.bias, expected.bias)
    assert module.pseudo_labels is callback.labels and module.class_weights.shape == (4,)


def test_restored_state_skips_the_initial_clustering_and_keeps_the_labels(tiny_encoder, monkeypatch):
    module = _module(tiny_encoder, k=4)
    callback = ClusterRefreshCallback(ClusterConfig(k=4, pca_dim=None), seed=1)
    callback.store = SpanFeatureStore(40, 32)
    x = np.random.default_rng(0).normal(size=(40, 32)).astype(np.float32)
    callback.recluster(module, SpanFeatures(x, np.arange(40)), -1, label_epoch=0)
    callback.history.append({"kind": "initial"})
    state = torch.load(_saved(callback.state_dict()), weights_only=True)  # as Lightning loads checkpoints

    restored = ClusterRefreshCallback(ClusterConfig(k=4, pca_dim=None), seed=1)
    restored.load_state_dict(state)
    monkeypatch.setattr(ClusterRefreshCallback, "extract", lambda *a: pytest.fail("re-extracted on resume"))
    fresh = _module(tiny_encoder, k=4)
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(num_spans=40),
        current_epoch=0,
        max_epochs=2,
        max_steps=-1,
        should_stop=False,
    )
    restored.on_train_start(trainer, fresh)
    assert np.array_equal(fresh.pseudo_labels.assignments, callback.labels.assignments)
    assert np.array_equal(fresh.pseudo_labels.span_ids, callback.labels.span_ids)
    assert torch.equal(restored.store.features, callback.store.features) and fresh.features is restored.store
    assert restored.history == [{"kind": "initial"}]


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_fewer_spans_than_k_is_a_one_line_cofee_error(tiny_encoder):
    module = _module(tiny_encoder, k=50)
    callback = ClusterRefreshCallback(ClusterConfig(k=50, pca_dim=None), seed=1)
    callback.store = SpanFeatureStore(10, 32)
    x = np.random.default_rng(0).normal(size=(10, 32)).astype(np.float32)
    with pytest.raises(TooFewSpansError) as info:
        callback.recluster(module, SpanFeatures(x, np.arange(10)), -1, label_epoch=0)
    assert isinstance(info.value, CofeeError) and "\n" not in str(info.value)
    assert "10 spans" in str(info.value) and "k=50" in str(info.value)


def test_fet_config_is_checked(compose_cfg):
    root = validate(compose_cfg(["curriculum.stages=[esi,nee,fet]"]))
    assert root.stages.fet.lambda_cluster == pytest.approx(0.001) and root.stages.fet.cluster.k == 23
    assert ClusterConfig.from_stage(root.stages.fet.cluster, root.seed).seed == root.seed
    for override, key in (
        ("stages.fet.pooling=avg", "stages.fet.pooling"),
        ("stages.fet.cluster.k=0", "stages.fet.cluster.k"),
        ("stages.fet.cluster.use_gpu=maybe", "stages.fet.cluster.use_gpu"),
        ("stages.fet.cluster.class_weights=equal", "stages.fet.cluster.class_weights"),
        ("stages.fet.refresh_every_n_epochs=0", "stages.fet.refresh_every_n_epochs"),
        ("stages.fet.refresh_every_n_steps=0", "stages.fet.refresh_every_n_steps"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(compose_cfg([override]))
    both = ["stages.fet.refresh_every_n_steps=50", "stages.fet.refresh_every_n_epochs=2"]
    with pytest.raises(ConfigError, match=r"refresh_every_n_steps': refreshes go by steps or by epochs"):
        validate(compose_cfg(both))


def _final_refresh_state(stage_dir) -> dict:
    checkpoint = torch.load(stage_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return checkpoint["callbacks"]["ClusterRefreshCallback"]


def _without_timings(history: list[dict]) -> list[dict]:
    timed = ("seconds", "cluster_seconds", "extract_seconds", "epoch_seconds", "share")
    return [{k: v for k, v in entry.items() if k not in timed} for entry in history]


def _preempted_then_resumed(cfg, nee: Path, monkeypatch, stop_before) -> dict:
    """FET stopped at the first batch where `stop_before(trainer, batch_idx)` holds, then run again
    (resumed from its last checkpoint); returns the resumed run's export manifest."""
    from cofee.pipeline.curriculum import run_stage

    def stop(self, trainer, pl_module, batch, batch_idx):
        if stop_before(trainer, batch_idx):
            raise RuntimeError("preempted")

    with monkeypatch.context() as patch:
        patch.setattr(ClusterRefreshCallback, "on_train_batch_start", stop, raising=False)
        with pytest.raises(RuntimeError, match="preempted"):
            run_stage(cfg, "fet", init_from=nee)
    return run_stage(cfg, "fet", init_from=nee)


def test_a_resumed_fet_refreshes_like_an_uninterrupted_one(curriculum, tmp_path, monkeypatch):
    """Stopped in the middle of epoch 1 (a checkpoint after every step), resumed: no second initial
    clustering, the restored labels are used, the refresh after epoch 1 clusters the vectors recorded
    before (restored from the checkpoint) and after the stop, and the labels, the history, the
    metrics and the encoder end as in an uninterrupted run."""
    import copy

    cfg, results = curriculum
    straight, straight_dir = results["fet"], Path(cfg.paths.output_dir) / "fet"
    nee = Path(cfg.paths.output_dir) / "nee" / "encoder"
    cfg = copy.deepcopy(cfg)
    cfg.paths.output_dir = str(tmp_path)
    cfg.curriculum.checkpoint_every_n_steps = 1

    resumed = _preempted_then_resumed(cfg, nee, monkeypatch, lambda t, i: t.current_epoch == 1 and i == 1)
    assert [h["kind"] for h in resumed["clustering"]["history"]] == ["initial", "refresh", "refresh"]
    assert _without_timings(resumed["clustering"]["history"]) == _without_timings(
        straight["clustering"]["history"]
    )
    a, b = (_final_refresh_state(folder)["labels"] for folder in (straight_dir, tmp_path / "fet"))
    assert torch.equal(a["assignments"], b["assignments"]) and torch.equal(a["span_ids"], b["span_ids"])
    for key in ("fet/val/loss", "fet/train/cluster_loss", "fet/cluster/nmi_prev"):
        assert resumed["metrics"][key] == straight["metrics"][key], key
    a, b = (load_exported_encoder(folder / "encoder")[0] for folder in (straight_dir, tmp_path / "fet"))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_fine_typing_report_scores_every_encoder_against_the_random_baseline(curriculum, tmp_path):
    from cofee.experiments.fet_eval import run

    cfg, _ = curriculum
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- fet:begin -->\nold\n<!-- fet:end -->\nrest\n", encoding="utf-8")
    report = run(cfg, results=tmp_path / "fet_quality.json", readme=readme, n_seeds=2)
    assert report["encoders"] == ["base", "esi", "nee", "fet"]
    assert report["spans"]["all"] > cfg.stages.fet.cluster.k and report["spans"]["by_fine_type"]
    for encoder in report["encoders"]:
        scores = report["quality"][encoder]["all"]
        assert 0 <= scores["nmi"] <= 1 and 0 < scores["purity"] <= 1 and scores["nmi_std"] >= 0
        assert "random_nmi" in scores
    clustering = report["clustering"]
    assert clustering["k"] == 8 and len(clustering["nmi_between_refreshes"]) == 2
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and "| train sample + dev |" in text and "refresh share of the epoch" in text
    assert (tmp_path / "fet_quality.json").is_file()


def test_a_resumed_fet_refreshing_by_steps_refreshes_like_an_uninterrupted_one(
    curriculum, tmp_path, monkeypatch
):
    """Refreshes after every step, stopped before step 2 (the checkpoint of step 1 holds its refresh),
    resumed: the refreshes after steps 1 to 3 and the labels end as in an uninterrupted run."""
    import copy

    from cofee.pipeline.curriculum import run_stage

    cfg, _ = curriculum
    nee = Path(cfg.paths.output_dir) / "nee" / "encoder"
    cfg = copy.deepcopy(cfg)
    cfg.stages.fet.max_epochs, cfg.stages.fet.refresh_every_n_steps = 2, 1
    cfg.curriculum.checkpoint_every_n_steps = 1
    cfg.paths.output_dir = str(tmp_path / "straight")
    straight = run_stage(copy.deepcopy(cfg), "fet", init_from=nee)
    cfg.paths.output_dir = str(tmp_path / "resumed")

    resumed = _preempted_then_resumed(cfg, nee, monkeypatch, lambda trainer, _: trainer.global_step == 1)
    history = _without_timings(resumed["clustering"]["history"])
    assert [h.get("after_step") for h in history] == [None, 1, 2, 3]
    assert history == _without_timings(straight["clustering"]["history"])
    a, b = (_final_refresh_state(tmp_path / run / "fet")["labels"] for run in ("straight", "resumed"))
    assert torch.equal(a["assignments"], b["assignments"]) and torch.equal(a["span_ids"], b["span_ids"])


LEVERS = {
    "within_types": {"cluster.within_types": True},
    "typed_spans": {"cluster.spans": "typed"},
    "prototype": {"cluster_loss": "prototype", "prototype_temperature": 0.2},
    "cluster_head_lr": {"optim.cluster_head_lr": 0.05},
    "refresh_steps": {"refresh_every_n_steps": 1},
}


@pytest.mark.parametrize("lever", sorted(LEVERS))
def test_fet_trains_with_each_lever_on_the_shared_esi_and_nee(curriculum, tmp_path, lever):
    """Each lever of FET through the curriculum: ESI and NEE copied from the default run
    (`curriculum.reuse_from`, the same inputs), FET trained two short epochs with the lever on."""
    import copy

    cfg, results = curriculum
    default_dir = cfg.paths.output_dir
    cfg = copy.deepcopy(cfg)
    cfg.paths.output_dir = str(tmp_path / lever)
    cfg.curriculum.reuse_from = [default_dir]
    cfg.stages.fet.max_epochs = 2
    for key, value in LEVERS[lever].items():
        *path, name = key.split(".")
        setattr(_node(cfg.stages.fet, path), name, value)
    out = run_curriculum(cfg)
    assert manifest_hash(out["nee"]) == manifest_hash(results["nee"])  # ESI and NEE copied, not retrained
    fet = out["fet"]
    refreshes = 3 if lever == "refresh_steps" else 1  # after steps 1, 2 and 3 of 4; else after epoch 0
    assert fet["global_step"] == 4 and fet["clustering"]["refreshes"] == refreshes
    assert (
        np.isfinite(fet["metrics"]["fet/train/cluster_loss"]) and fet["metrics"]["fet/train/cluster_loss"] > 0
    )
    history = fet["clustering"]["history"]
    checkpoint = torch.load(tmp_path / lever / "fet" / "checkpoints" / "last.ckpt", weights_only=True)
    if lever == "within_types":  # a share of k for every coarse type, unknown-type spans included
        for entry in history:
            assert sum(entry["group_k"].values()) == 8 and min(entry["group_k"].values()) >= 1
            assert "?" in entry["group_k"] and set(entry["group_k"]) <= {*NEE_TYPES, "?"}
    elif lever == "typed_spans":  # unknown-type spans are left out of the clustering
        assert history[0]["group_k"] == {"typed": 8}
        assert 8 < history[0]["spans"] < results["fet"]["clustering"]["history"][0]["spans"]
    elif lever == "prototype":  # no trained head: the prototypes are the last clustering's centroids
        weights = checkpoint["state_dict"]
        assert "cluster_head.weight" not in weights and weights["cluster_head.prototypes"].shape == (8, 16)
        assert torch.allclose(weights["cluster_head.prototypes"].norm(dim=-1), torch.ones(8))
    elif lever == "refresh_steps":  # within the epochs too, each step's clustering seeded apart
        refreshed = history[1:]
        assert [(h.get("after_step"), h["after_epoch"]) for h in refreshed] == [(1, 0), (2, 0), (3, 1)]
        assert len({h["seed"] for h in history}) == 4 and fet["clustering"]["every_n_steps"] == 1
    else:
        rates = {g["initial_lr"] for g in checkpoint["optimizer_states"][0]["param_groups"]}
        assert 0.05 in rates and cfg.stages.fet.optim.head_lr in rates


def _node(node, path):
    for name in path:
        node = getattr(node, name)
    return node


@pytest.mark.slow
@pytest.mark.parametrize(
    "refresh, refreshes",
    [([], 2), (["stages.fet.refresh_every_n_steps=1"], 5)],  # after epochs 0 and 1; after steps 1 to 5 of 6
    ids=["by-epochs", "by-steps"],
)
def test_fet_under_two_process_ddp_keeps_every_rank_on_the_same_labels(tmp_path, refresh, refreshes):
    """esi, nee, fet with `trainer=ddp` (2 CPU processes, gloo) through the CLI: the run ends, and
    every clustering (rank 0 clusters and broadcasts) left both ranks with the same labels, whether
    the refreshes come at epoch ends or within the epochs."""
    import json
    import os
    import subprocess
    import sys

    dump = write_dump(tmp_path / "dump.xml")
    command = [
        sys.executable,
        "-m",
        "cofee.cli.pretrain",
        "experiment=smoke",
        f"paths.root={tmp_path}",
        f"data.anchors.dump={dump}",
        "data.anchors.build_workers=1",
        "data.anchors.dev_fraction=0.2",
        f"data.gazetteer.user_lists_dir={user_lists(tmp_path / 'lists')}",
        *PACKAGED_OFF,
        "curriculum.stages=[esi,nee,fet]",
        "stages.nee.max_epochs=1",
        "stages.fet.max_epochs=3",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "trainer=ddp",
        "trainer.devices=2",
        # BertModel's pooler takes no part in any stage's loss
        "trainer.strategy=ddp_find_unused_parameters_true",
        *refresh,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "outputs" / "smoke" / "fet" / "encoder" / "manifest.json").read_text())
    assert manifest["clustering"]["refreshes"] == refreshes
    # every clustering checked that both ranks hold the same labels (a digest gathered from each)
    assert [h["ranks"] for h in manifest["clustering"]["history"]] == [2] * (refreshes + 1)
