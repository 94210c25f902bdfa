"""A fourth pre-training stage added without touching the package: its LightningModule, config class
and recipe defined here, registered here, enabled by a YAML file of its own, and run by the real
curriculum after ESI, from ESI's export."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
import torch

from cofee.config import StageConfig, validate
from cofee.data_modules.wiki_anchor import WikiAnchorDataModule
from cofee.models.export import load_exported_encoder, manifest_hash, read_export_manifest
from cofee.pipeline.curriculum import run_curriculum
from cofee.pipeline.recipes.registry import stage_recipe, unregister_stage
from cofee.stages.esi import ENTITY_TYPE, ESIModule

# the YAML that enables the stage: the smoke run, then the toy stage straight after ESI
TOY_EXPERIMENT = """# @package _global_
defaults:
  - smoke
curriculum:
  stages: [esi, toy]
stages:
  toy:
    optim:
      lr: 1.0e-3
trainer:
  limit_train_batches: 2
  limit_val_batches: 1
"""


@dataclass
class ToyStageConfig(StageConfig):
    """`stages.toy`: ESI's tagging task again, with the embeddings frozen."""

    name: str = "toy"
    freeze_embeddings: bool = True


class ToyModule(ESIModule):
    stage_name = "toy"  # its metrics read toy/<split>/<metric>


def build_toy(cfg, encoder, tokenizer, init_from):
    stage, data = cfg.stages.toy, cfg.data.anchors
    encoder.embeddings.requires_grad_(not stage.freeze_embeddings)
    module = ToyModule(encoder, stage.optim, scheme=stage.scheme, dropout=stage.dropout)
    datamodule = WikiAnchorDataModule(
        tokenizer=tokenizer,
        label2id=module.head.label2id,
        corpus_dir=data.corpus_dir,
        dump=data.dump,
        build_workers=data.build_workers,
        scheme=stage.scheme,
        entity_type=ENTITY_TYPE,
        max_length=data.max_length,
        batch_size=stage.batch_size,
        eval_batch_size=stage.eval_batch_size,
        dev_fraction=data.dev_fraction,
        max_train_sentences=data.max_train_sentences,
        seed=cfg.seed,
        cache_dir=data.cache_dir,
    )
    return module, datamodule, []


@pytest.fixture
def toy_stage():
    stage_recipe("toy", data=("anchors",), config=ToyStageConfig, after="fet")(build_toy)
    yield
    unregister_stage("toy")


def _cfg(compose_cfg, tmp_path, dump):
    experiments = tmp_path / "conf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "toy.yaml").write_text(TOY_EXPERIMENT, encoding="utf-8")
    return validate(
        compose_cfg(
            [
                f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                "experiment=toy",
                f"paths.root={tmp_path}",
                f"data.anchors.dump={dump}",
                "data.anchors.build_workers=1",
                "data.anchors.dev_fraction=0.2",
            ]
        )
    )


def test_a_stage_registered_outside_the_package_trains_from_its_parents_export(
    toy_stage, compose_cfg, tmp_path, small_dump, caplog
):
    cfg = _cfg(compose_cfg, tmp_path, small_dump)
    assert isinstance(cfg.stages.toy, ToyStageConfig) and cfg.stages.toy.optim.lr == 1e-3
    with caplog.at_level(logging.WARNING, logger="cofee.pipeline.curriculum"):
        results = run_curriculum(cfg)
    assert list(results) == ["esi", "toy"]
    assert "curriculum skips nee, fet: toy starts from the esi export" in caplog.text

    run = tmp_path / "outputs" / "smoke"
    esi, toy = read_export_manifest(run / "esi" / "encoder"), read_export_manifest(run / "toy" / "encoder")
    assert toy == results["toy"] and toy["stage"] == "toy"
    assert toy["parent"] == manifest_hash(esi) and toy["parent_path"] == str(run / "esi" / "encoder")
    assert toy["inputs"]["stages"]["toy"]["freeze_embeddings"] is True
    assert list(toy["inputs"]["data"]) == ["anchors"] and toy["inputs"]["model"] is None
    assert toy["global_step"] == 2 and "toy/val/f1" in toy["metrics"]

    # started from ESI's weights: the frozen embeddings are ESI's exactly, the layers above trained on
    esi_encoder, _ = load_exported_encoder(run / "esi" / "encoder")
    toy_encoder, _ = load_exported_encoder(run / "toy" / "encoder")
    esi_weights, toy_weights = esi_encoder.state_dict(), toy_encoder.state_dict()
    embeddings = [k for k in esi_weights if k.startswith("embeddings.")]
    assert embeddings and all(torch.equal(esi_weights[k], toy_weights[k]) for k in embeddings)
    assert any(
        not torch.equal(esi_weights[k], toy_weights[k]) for k in esi_weights if k.startswith("encoder.")
    )

    # its inputs are recorded like a built-in stage's: a rerun finds it done and skips it
    assert run_curriculum(cfg)["toy"] == toy
