"""Stage 3 (FET): the share of an epoch spent in the cluster refresh, at the default settings.

Setup: the packaged MiniLM (standing in for the NEE export: the cost does not depend on the weights),
the default gazetteer-labelled corpus of the gensim sample (built into benchmarks/work when missing),
a seeded sample of `SENTENCES` training sentences, and the FET defaults (k=23, PCA 128 with
whitening, 60 k-means iterations at most, sum pooling from layer -2, batch 16, refresh after every
epoch from the vectors the epoch recorded). Two epochs of the real `FETModule` and
`ClusterRefreshCallback` in a Lightning Trainer on the CPU; the refresh after epoch 0 is timed by the
callback itself (gather, store update, PCA + k-means over every training span, NMI with the previous
assignment, head re-initialisation), and so is the epoch (training only: validation is off, which
makes the share larger than in a real run, where validation is part of the epoch). The second epoch
is cut after one batch (it only has to start on the new labels).

Figures:

* ``fet_epoch_share_not_refreshing``: training seconds / (training + refresh seconds) of epoch 0;
  target >= 0.85, i.e. the refresh takes under 15% of the epoch. The refresh share is in the JSON
  (`refresh_share`). Both grow linearly in the number of spans, so a larger sample keeps the share
  (fixed costs, such as FAISS thread start-up, make a small sample the harder case).
* ``fet_refresh_recorded_vs_extract``: refreshes per minute with the recorded vectors (the default)
  against `refresh_features: extract` (an eval-mode pass over every training window, then the same
  clustering, as DeepCluster and the CoFEE code do); target >= 2.

The initial clustering (one extraction pass plus k-means, once per stage, not per epoch) is recorded
in the JSON as well.

Run: python -m benchmarks.bench_fet   (writes benchmarks/results/fet.json)
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch

from benchmarks.common import WORK, figure, write_results
from cofee.callbacks.cluster_refresh import ClusterRefreshCallback
from cofee.clustering.kmeans import ClusterConfig
from cofee.config import (
    AnchorBuildConfig,
    AnchorDataConfig,
    EncoderConfig,
    FETClusterConfig,
    GazetteerDataConfig,
    OptimConfig,
)
from cofee.data.alignment import special_tokens
from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path
from cofee.data_modules.cluster_spans import ClusterDataModule
from cofee.models.encoder import load_encoder, load_tokenizer
from cofee.stages.fet import FETModule

SENTENCES = 400
SEED = 13
TYPES = ["PER", "LOC", "ORG", "MISC"]


class _StopSecondEpoch(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            return -1  # Lightning ends the epoch here
        return None


def datamodule(tokenizer) -> ClusterDataModule:
    corpus = WORK / "anchors"
    build_anchor_corpus(default_dump_path(), corpus, AnchorBuildConfig(), num_workers=1, progress=False)
    # the cache in the bench's own work folder: the schema's default is an interpolation no config resolves here
    anchors = AnchorDataConfig(corpus_dir=str(corpus), build_workers=1, cache_dir=str(WORK / "token_cache"))
    gazetteer = GazetteerDataConfig(
        gazetteer_dir=str(WORK / "gazetteer"), labelled_dir=str(WORK / "labelled")
    )
    dm = ClusterDataModule(
        tokenizer, TYPES, gazetteer, anchors, batch_size=16, max_train_sentences=SENTENCES, seed=SEED
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def one_run(dm: ClusterDataModule, tokenizer, features: str) -> dict:
    pl.seed_everything(SEED, workers=True)
    encoder = load_encoder(EncoderConfig())
    cluster = FETClusterConfig()
    module = FETModule(
        encoder,
        OptimConfig(lr=1e-5, head_lr=1e-3),
        TYPES,
        k=cluster.k,
        suffix_len=len(special_tokens(tokenizer)[1]),
    )
    refresh = ClusterRefreshCallback(
        ClusterConfig.from_stage(cluster, SEED), every_n_epochs=1, seed=SEED, features=features
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        callbacks=[refresh, _StopSecondEpoch()],
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    initial, after = refresh.history[0], refresh.history[1]
    return {"initial": initial, "refresh": after, "fit_seconds": round(time.perf_counter() - started, 2)}


def run() -> dict:
    tokenizer = load_tokenizer(EncoderConfig())
    dm = datamodule(tokenizer)
    recorded = one_run(dm, tokenizer, "recorded")
    extract = one_run(dm, tokenizer, "extract")
    r = recorded["refresh"]
    training, refresh_s = r["epoch_seconds"], r["seconds"]
    figures = [
        figure(
            "fet_epoch_share_not_refreshing",
            training,
            "s of training",
            training + refresh_s,
            0.85,
            f"MiniLM, {dm.num_spans} spans of {SENTENCES} sentences, k=23, PCA 128, refresh from the "
            f"vectors the epoch recorded: refresh {refresh_s:.2f} s = {100 * r['share']:.1f}% of the epoch",
        ),
        figure(
            "fet_refresh_recorded_vs_extract",
            60.0 / refresh_s,
            "refreshes/min",
            60.0 / extract["refresh"]["seconds"],
            2.0,
            "refresh from the recorded vectors vs an eval-mode extraction pass over every training window",
        ),
    ]
    path = write_results(
        "fet",
        figures,
        sentences=SENTENCES,
        spans=dm.num_spans,
        refresh_share=r["share"],
        recorded=recorded,
        extract=extract,
        threads=torch.get_num_threads(),
    )
    return {"path": str(path), "figures": figures}


if __name__ == "__main__":
    for fig in run()["figures"]:
        print(fig)
