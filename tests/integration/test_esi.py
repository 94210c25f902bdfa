import json

import pytest
import torch
from transformers import AutoModel

from cofee.config import OptimConfig
from cofee.data.tagging import label_names
from cofee.data.wiki.build_anchors import iter_corpus
from cofee.data_modules.wiki_anchor import WikiAnchorDataModule, is_dev_page
from cofee.pipeline.curriculum import run_curriculum
from cofee.stages.esi import ESIModule
from tests.support import smoke_cfg


def test_datamodule_holds_out_whole_pages(tokenizer, small_dump, tmp_path):
    label2id = {name: i for i, name in enumerate(label_names("BIO", ["ENT"]))}
    dm = WikiAnchorDataModule(tokenizer, label2id, tmp_path / "corpus", dump=small_dump, dev_fraction=0.2)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("fit")  # idempotent
    assert dm.train_windows and dm.val_windows
    assert dm.stats["train"].spans > 0 and dm.stats["train"].dropped_spans == 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape
    records = list(iter_corpus(tmp_path / "corpus"))
    pages = {r["page_id"] for r in records}
    dev_pages = {p for p in pages if is_dev_page(p, 0.2, 0)}
    assert 0 < len(dev_pages) < len(pages)
    assert dm.stats["val"].sentences == sum(r["page_id"] in dev_pages for r in records)
    assert dm.stats["train"].sentences == len(records) - dm.stats["val"].sentences


def test_fast_dev_run_trains_and_exports(compose_cfg, tmp_path, small_dump):
    cfg = smoke_cfg(compose_cfg, tmp_path, small_dump, "trainer.fast_dev_run=true")
    manifest = run_curriculum(cfg)["esi"]
    export = tmp_path / "outputs" / "smoke" / "esi" / "encoder"
    assert manifest["stage"] == "esi" and manifest["global_step"] == 1
    assert json.loads((export / "manifest.json").read_text())["config_hash"] == manifest["config_hash"]
    assert manifest["data_counts"]["anchors"] > 0
    assert AutoModel.from_pretrained(str(export), local_files_only=True).config.hidden_size == 32


def test_training_learns_spans_and_rerun_is_skipped(compose_cfg, tmp_path, small_dump):
    cfg = smoke_cfg(compose_cfg, tmp_path, small_dump, "stages.esi.max_epochs=20", "logger=csv")
    first = run_curriculum(cfg)["esi"]
    # the synthetic pages are regular: a tiny encoder must find most anchor spans on held-out pages
    assert first["metrics"]["esi/val/f1"] > 0.5, first["metrics"]
    metrics_csv = tmp_path / "outputs" / "smoke" / "esi" / "logs" / "metrics.csv"
    assert "esi/val/f1" in metrics_csv.read_text().splitlines()[0]
    assert (tmp_path / "outputs" / "smoke" / "esi" / "checkpoints" / "last.ckpt").is_file()
    again = run_curriculum(cfg)["esi"]
    assert again["created"] == first["created"]  # found up to date, not retrained


def test_distillation_keeps_a_frozen_reference(tiny_encoder):
    module = ESIModule(tiny_encoder, OptimConfig(distill_weight=1.0)).eval()
    assert module.reference is not None
    assert not any(p.requires_grad for p in module.reference.parameters())
    batch = {
        "input_ids": torch.tensor([[101, 2000, 102]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
    }
    hidden = module.encode(batch)
    assert module.distill_loss(hidden, batch).item() == pytest.approx(0.0, abs=1e-10)


# -- the masked-LM forgetting control ----------------------------------------------------------
def _export_weights(export) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    head = torch.load(export / "span_head.pt", weights_only=True)
    return {**load_file(export / "model.safetensors"), **{f"head.{k}": v for k, v in head.items()}}


def test_masked_lm_trains_through_the_curriculum_and_stays_out_of_the_export(
    compose_cfg, tmp_path, small_dump, tiny_encoder
):
    from cofee.models.export import load_export_head, load_exported_encoder

    cfg = smoke_cfg(
        compose_cfg,
        tmp_path,
        small_dump,
        "stages.esi.optim.mlm_weight=1.0",
        "trainer.limit_train_batches=4",
        "logger=csv",
    )
    manifest = run_curriculum(cfg)["esi"]
    assert manifest["global_step"] == 4 and manifest["config"]["stage"]["optim"]["mlm_weight"] == 1.0
    assert 0 < manifest["metrics"]["esi/train/mlm_loss"] < 20  # about ln(30522) = 10.3 from a fresh head
    export = tmp_path / "outputs" / "smoke" / "esi" / "encoder"
    encoder, _ = load_exported_encoder(export)
    head = load_export_head(export, encoder.config.hidden_size)
    weights = _export_weights(export)
    assert {k for k in weights if not k.startswith("head.")} == set(tiny_encoder.state_dict())
    assert {k for k in weights if k.startswith("head.")} == {f"head.{k}" for k in head.state_dict()}
    assert not any("mlm" in k or "decoder" in k for k in weights)


def test_masked_lm_resumes_as_the_uninterrupted_run(compose_cfg, tmp_path, small_dump, monkeypatch):
    common = ("stages.esi.optim.mlm_weight=1.0", "curriculum.checkpoint_every_n_steps=2")
    steps = run_curriculum(smoke_cfg(compose_cfg, tmp_path, small_dump, "run_name=full", *common))["esi"]
    assert steps["global_step"] > 3  # the stop below comes mid-epoch
    cfg = smoke_cfg(compose_cfg, tmp_path, small_dump, "run_name=cut", *common)

    def stop_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:  # last.ckpt is from step 2: step 2 runs again after the resume
            raise RuntimeError("stopped")

    with monkeypatch.context() as patch:
        patch.setattr(ESIModule, "on_train_batch_start", stop_at_step_3, raising=False)
        with pytest.raises(RuntimeError, match="stopped"):
            run_curriculum(cfg)
    assert not (tmp_path / "outputs" / "cut" / "esi" / "encoder").exists()
    assert run_curriculum(cfg)["esi"]["global_step"] == steps["global_step"]
    full = _export_weights(tmp_path / "outputs" / "full" / "esi" / "encoder")
    resumed = _export_weights(tmp_path / "outputs" / "cut" / "esi" / "encoder")
    assert resumed.keys() == full.keys()
    for name, tensor in full.items():
        assert torch.equal(resumed[name], tensor), name


def test_a_boundary_tagging_esi_head_learns_spans_and_feeds_nee(compose_cfg, tmp_path):
    """ESI trained with BIOES tags (an end-of-span tag: the boundary lever of `make study-esi`) learns
    the spans as BIO does, and exports a head NEE's parent-span pass decodes in its own scheme."""
    from tests.support import nee_cfg

    cfg = nee_cfg(
        compose_cfg,
        tmp_path,
        "stages.esi.scheme=BIOES",
        "stages.esi.max_epochs=20",
        "stages.nee.max_epochs=1",
    )
    manifests = run_curriculum(cfg)
    assert manifests["esi"]["head"]["scheme"] == "BIOES" and manifests["esi"]["head"]["types"] == ["ENT"]
    assert manifests["esi"]["metrics"]["esi/val/f1"] > 0.5, manifests["esi"]["metrics"]
    # a trained head marks few spans the gazetteer left as O (often none); the pass ran and is recorded
    assert manifests["nee"]["parent_spans"]["marked"] >= 0 and manifests["nee"]["global_step"] > 0


def test_the_span_objective_trains_through_the_curriculum_and_stays_out_of_the_export(
    compose_cfg, tmp_path, small_dump, tiny_encoder
):
    """`span_weight` adds the span-level loss to the tagger's (logged on its own) and trains the scorer
    at the head rate; the export holds the encoder and the tagger only."""
    cfg = smoke_cfg(
        compose_cfg,
        tmp_path,
        small_dump,
        "stages.esi.span_weight=1.0",
        "stages.esi.span_max_width=4",
        "stages.esi.optim.lr=1e-4",  # apart from the head rate, to tell the groups apart
        "trainer.limit_train_batches=4",
        "logger=csv",
    )
    manifest = run_curriculum(cfg)["esi"]
    assert manifest["global_step"] == 4 and manifest["config"]["stage"]["span_weight"] == 1.0
    metrics = manifest["metrics"]
    assert 0 < metrics["esi/train/span_loss"] < 1  # ln 2 = 0.69 from a fresh scorer, falling
    parts = metrics["esi/train/tag_loss"] + metrics["esi/train/span_loss"]  # the last step's, weight 1
    assert metrics["esi/train/task_loss"] == pytest.approx(parts) == metrics["esi/train/loss"]
    checkpoint = torch.load(
        tmp_path / "outputs" / "smoke" / "esi" / "checkpoints" / "last.ckpt", weights_only=True
    )
    rates = [g["initial_lr"] for g in checkpoint["optimizer_states"][0]["param_groups"]]
    head_lr = cfg.stages.esi.optim.head_lr
    # tagger and scorer, decay or not; the encoder
    assert rates.count(head_lr) == 4 and rates.count(1e-4) == 2
    weights = _export_weights(tmp_path / "outputs" / "smoke" / "esi" / "encoder")
    assert {k for k in weights if not k.startswith("head.")} == set(tiny_encoder.state_dict())
    assert not any("scorer" in k for k in weights)
