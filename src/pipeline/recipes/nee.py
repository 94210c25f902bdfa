"""NEE's recipe: a typed tagger with a partial-label loss on gazetteer-labelled text, from ESI."""

from __future__ import annotations

import logging
from pathlib import Path

from cofee.config import RootConfig
from cofee.data_modules.gazetteer_labelled import GazetteerDataModule
from cofee.models.export import read_export_manifest
from cofee.pipeline.recipes.gazetteer import gazetteer_data_module, self_training
from cofee.pipeline.recipes.registry import StageParts, stage_recipe
from cofee.stages.nee import NEEModule

log = logging.getLogger(__name__)


@stage_recipe("nee", data=("anchors", "gazetteer"))  # NEE labels the anchor corpus with the gazetteer
def build_nee(cfg: RootConfig, encoder, tokenizer, init_from: Path | None) -> StageParts:
    stage, gazetteer = cfg.stages.nee, cfg.data.gazetteer
    module = NEEModule(
        encoder, stage.optim, gazetteer.types, stage.scheme, stage.dropout, stage.noise, stage.type_balance
    )
    if init_from is None or (read_export_manifest(init_from).get("stage") != "esi" and stage.noise.esi_spans):
        log.warning("nee: not started from an ESI export; only untyped anchors count as unknown-type spans")
    datamodule = gazetteer_data_module(GazetteerDataModule, cfg, stage, tokenizer, init_from)
    return module, datamodule, self_training(cfg, stage)
