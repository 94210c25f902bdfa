"""FET's recipe: NEE's typed tagger plus a cluster head trained on k-means pseudo-labels, from NEE."""

from __future__ import annotations

import logging
from pathlib import Path

from cofee.callbacks.cluster_refresh import ClusterRefreshCallback
from cofee.clustering.kmeans import ClusterConfig
from cofee.config import RootConfig
from cofee.data.alignment import special_tokens
from cofee.data_modules.cluster_spans import ClusterDataModule
from cofee.models.export import load_export_head, read_export_manifest
from cofee.pipeline.recipes.gazetteer import gazetteer_data_module, self_training
from cofee.pipeline.recipes.registry import StageParts, stage_recipe
from cofee.stages.fet import FETModule

log = logging.getLogger(__name__)


@stage_recipe("fet", data=("anchors", "gazetteer"))  # NEE's data, with span ids
def build_fet(cfg: RootConfig, encoder, tokenizer, init_from: Path | None) -> StageParts:
    """FET from the NEE export: its encoder, its typed head when the export has one, a fresh cluster
    head; the data of NEE with span ids; a callback that keeps the pseudo-labels fresh."""
    stage, gazetteer = cfg.stages.fet, cfg.data.gazetteer
    module = FETModule(
        encoder,
        stage.optim,
        gazetteer.types,
        k=stage.cluster.k,
        scheme=stage.scheme,
        dropout=stage.dropout,
        noise=stage.noise,
        pooling=stage.pooling,
        feature_layer=stage.feature_layer,
        lambda_cluster=stage.lambda_cluster,
        suffix_len=len(special_tokens(tokenizer)[1]),
        type_balance=stage.type_balance,
        cluster_loss=stage.cluster_loss,
        prototype_temperature=stage.prototype_temperature,
        pca_dim=stage.cluster.pca_dim,
    )
    parent_stage = read_export_manifest(init_from).get("stage") if init_from is not None else None
    if parent_stage != "nee":
        log.warning("fet: started from %s, not from an NEE export", parent_stage or "the base encoder")
    head = load_export_head(init_from, encoder.config.hidden_size) if init_from is not None else None
    if head is not None and head.spec() == module.head.spec():
        module.head.load_state_dict(head.state_dict())
        log.info("fet: typed head taken from %s", init_from)
    else:
        log.warning(
            "fet: %s has no typed head of this scheme and types; the typed head starts fresh", init_from
        )
    datamodule = gazetteer_data_module(ClusterDataModule, cfg, stage, tokenizer, init_from)
    refresh = ClusterRefreshCallback(
        ClusterConfig.from_stage(stage.cluster, cfg.seed),
        stage.refresh_every_n_epochs,
        cfg.seed,
        stage.refresh_features,
        within_types=stage.cluster.within_types,
        spans=stage.cluster.spans,
        every_n_steps=stage.refresh_every_n_steps,
    )
    return module, datamodule, [refresh, *self_training(cfg, stage)]
