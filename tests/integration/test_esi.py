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
