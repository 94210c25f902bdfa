"""Cluster refresh for stage 3 (FET): pseudo-labels at train start, re-clustered every N epochs.

- Train start: one pass over the training windows (`ClusterDataModule.feature_dataloader`, eval
  mode) extracts every span's pooled vector; k-means turns them into the first pseudo-labels. A run
  resumed from a checkpoint skips this: its labels, feature store and history come back with it.
- End of every N-th epoch (not the last one: nothing would train on its labels): the vectors the
  epoch recorded (`SpanFeatureStore`; with `features="extract"` a fresh eval-mode pass instead) update
  the store, every span is re-clustered with the k-means seed derived from (seed, epoch), the
  cluster head is re-initialised from a seed derived from (seed, epoch) and its optimiser state
  dropped (DeepCluster: the old head's classes mean nothing for the new clusters).
- Or, with `every_n_steps`, after every N-th optimizer step (not the last) instead: the same
  re-clustering from the vectors recorded so far (the spans trained on since the last refresh have
  fresh ones), keyed by the step (`after_step`; the seeds derive from (seed, step)).
- Logged (`fet/cluster/...`): `nmi_prev` (NMI between the previous and the new assignment, by span
  id), `seconds` (the whole refresh), `size_min|median|max`, `empty`, `share` (the refresh's share of
  the epoch's wall time, training and validation included). `history` keeps one entry per clustering
  and goes into the export manifest.

Under DDP each rank's `SpanFeatureStore` holds the vectors of the spans it owns (span id modulo world
size) only, memory-mapped under `<stage>/span_features/` (so a resumed rank reopens its own share;
the checkpoint, rank 0's, records only where they are). The sampler deals the windows out to the
ranks anew every epoch, so a rank records vectors of spans other ranks own: those wait in its
pending file and are handed to their owners at the refresh (`exchange_pending`: each rank receives
only its own rows). The clustering (`cluster_distributed`) trains PCA and k-means on a seeded sample
of at most `cluster.max_train_spans` spans, by span id, gathered on rank 0; the PCA and centroids are
broadcast and each rank assigns the spans it owns. The labels are then gathered (`gather_labels`,
16 bytes a span, not 4 x dim): every rank trains on any span next epoch, so every rank ends with
identical pseudo-labels for every span and an identical re-initialised head. A single process keeps
its store in memory and in its checkpoint. Cluster sizes and `nmi_prev` come from per-rank counts
summed across ranks, over all spans.
Which spans are clustered, and together with which (`within_types`, `spans`): a group code per span
id from the data module's coarse types (`span_groups`); spans of group -1 get no pseudo-label (out of
the loss), the others are clustered within their group (`cofee.clustering.kmeans.fit_clusters`).
The history entry records `max_train_spans` and `train_spans` (the sample used), and `group_k` (each
group's share of k) when clustering within types. The state is saved
on the epoch boundary after the refresh (Lightning runs checkpoint callbacks last).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from cofee.clustering.distributed import (
    PseudoLabels,
    cluster_distributed,
    exchange_pending,
    gather_labels,
    reduced_nmi,
)
from cofee.clustering.features import SpanFeatures, SpanFeatureStore, extract_span_features
from cofee.clustering.kmeans import ClusterConfig, ClusteringError, derive_seed
from cofee.clustering.quality import nmi, purity
from cofee.config import REFRESH_FEATURES, ClusterSpans
from cofee.models.partial_labels import UNKNOWN_TYPE

log = logging.getLogger(__name__)


def _rank_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _ranks_agree(labels: PseudoLabels) -> int:
    """The number of ranks, after checking that every rank holds the very same pseudo-labels (a
    digest of span ids and assignments, gathered); a mismatch is an error, not a silent divergence."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 1
    digest = hashlib.sha1(
        np.ascontiguousarray(labels.span_ids, dtype=np.int64).tobytes()
        + np.ascontiguousarray(labels.assignments, dtype=np.int64).tobytes()
    ).hexdigest()
    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise ClusteringError(f"ranks hold different pseudo-labels (digests {digests})")
    return len(digests)


def _plain(value):
    """numpy scalars and the like -> JSON types (the checkpoint is loaded with weights_only)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


class ClusterRefreshCallback(pl.Callback):
    def __init__(
        self,
        cluster: ClusterConfig,
        every_n_epochs: int = 1,
        seed: int = 0,
        features: str = "recorded",
        within_types: bool = False,
        spans: str = "all",
        every_n_steps: int | None = None,
    ):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1 or None, got {every_n_steps}")
        if features not in REFRESH_FEATURES:
            raise ValueError(f"features must be one of {', '.join(REFRESH_FEATURES)}, got {features!r}")
        if spans not in tuple(ClusterSpans):
            raise ValueError(f"spans must be one of {', '.join(ClusterSpans)}, got {spans!r}")
        cluster.validate("stages.fet.cluster")
        self.cluster = cluster
        self.within_types = within_types
        self.spans = str(spans)
        self.groups = None  # group code per span id (-1: no pseudo-label); None: every span, one k-means
        self.group_names: list[str] = []  # the name of each group code
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps  # None: by epochs
        self.seed = seed
        self.features = features
        self.labels: PseudoLabels | None = None
        self.history: list[dict] = []
        self.store: SpanFeatureStore | None = None
        self._restored_store: dict | None = None
        self.reference = None  # fine-type code per span id (-1: unknown), for the record only
        self._epoch_started: float | None = None

    # -- checkpointed state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        labels = None
        if self.labels is not None:
            labels = {
                "span_ids": torch.from_numpy(np.asarray(self.labels.span_ids, dtype=np.int64)),
                "assignments": torch.from_numpy(np.asarray(self.labels.assignments, dtype=np.int64)),
                "class_weights": torch.from_numpy(np.asarray(self.labels.class_weights, dtype=np.float32)),
                "stats": _plain(self.labels.stats),
            }
        store = self.store.state_dict() if self.store is not None else None
        return {"labels": labels, "history": _plain(self.history), "store": store}

    def load_state_dict(self, state: dict) -> None:
        labels = state.get("labels")
        if labels is not None:
            self.labels = PseudoLabels(
                labels["span_ids"].numpy(),
                labels["assignments"].numpy(),
                labels["class_weights"].numpy(),
                dict(labels["stats"]),
            )
        self.history = list(state.get("history", []))
        self._restored_store = state.get("store")

    def manifest_entry(self) -> dict:
        """What the export manifest records about the clustering."""
        refreshes = [h for h in self.history if h["kind"] == "refresh"]
        summary = {
            "k": self.cluster.k,
            "every_n_epochs": None if self.every_n_steps else self.every_n_epochs,
            "every_n_steps": self.every_n_steps,
            "features": self.features,
            "max_train_spans": self.cluster.max_train_spans,
            "stats_from": "cluster sizes and nmi_prev: per-rank counts summed across ranks, all spans",
            "refreshes": len(refreshes),
            "mean_refresh_seconds": _mean(h["seconds"] for h in refreshes),
            "mean_refresh_share": _mean(h["share"] for h in refreshes if h["share"] is not None),
        }
        return {"clustering": {**summary, "history": _plain(self.history)}}

    # -- train start: the first labels ----------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        dim = pl_module.cluster_head.in_features
        rank, world = _rank_world()
        folder = self.store_folder(trainer, world)
        if self._restored_store is not None:
            self.store = SpanFeatureStore.from_state(self._restored_store, rank, world, folder)
            self._restored_store = None
        if self.store is None or len(self.store) != datamodule.num_spans:
            self.store = SpanFeatureStore(datamodule.num_spans, dim, rank, world, folder)
        pl_module.features = self.store
        # the data module's fine types as codes (memory-mapped; -1: none known), not one str per span
        codes = getattr(getattr(datamodule, "span_fine_types", None), "codes", None)
        self.reference = codes if codes is not None and len(codes) == len(self.store) else None
        self.groups, self.group_names = self.span_groups(datamodule)
        if self.labels is not None:  # resumed: keep the labels it trained on, no initial clustering
            pl_module.set_pseudo_labels(self.labels)
            log.info("fet: %d pseudo-labels restored, no initial clustering", len(self.labels.span_ids))
            finished = trainer.current_epoch - 1
            if finished >= 0 and self.missed(trainer, finished):
                # the stopped run ended on an epoch it did not refresh after (its last one): a run
                # that goes on refreshes now, from the vectors that epoch recorded (in the checkpoint)
                self.refresh(trainer, pl_module, finished, epoch_seconds=None)
            return
        started = time.perf_counter()
        local = self.extract(pl_module, datamodule.feature_dataloader())
        extracted = time.perf_counter() - started
        entry = self.recluster(pl_module, local, SpanFeatureStore.EXTRACTED, label_epoch=0)
        entry.update(
            kind="initial",
            extract_seconds=round(extracted, 3),
            seconds=round(entry["seconds"] + extracted, 3),
        )
        self.history.append(entry)
        log.info("fet: initial clustering %s", json.dumps(entry))

    def span_groups(self, datamodule) -> tuple[np.ndarray | None, list[str]]:
        """The group of each span id from the data module's coarse-type codes: the coarse type with
        `within_types` (unknown-type spans a group of their own), else one group; -1 for unknown-type
        spans with `spans: typed`. (None, []) when every span goes into one k-means."""
        if not self.within_types and self.spans == ClusterSpans.all:
            return None, []
        types = getattr(datamodule, "span_types", None)
        codes = getattr(types, "codes", None)
        if codes is None or len(codes) != datamodule.num_spans:
            key = "within_types" if self.within_types else "spans"
            raise ClusteringError(
                f"stages.fet.cluster.{key} needs the coarse type of every span; the data module has none"
            )
        codes = np.asarray(codes)
        left_out = np.zeros(codes.shape, dtype=bool)
        if self.spans == ClusterSpans.typed and UNKNOWN_TYPE in types.vocab:
            left_out = codes == types.vocab.index(UNKNOWN_TYPE)
        if self.within_types:
            return np.where(left_out, -1, codes).astype(np.int64), list(types.vocab)
        return np.where(left_out, -1, 0).astype(np.int64), ["typed"]

    @staticmethod
    def store_folder(trainer: pl.Trainer, world: int) -> Path | None:
        """Where each rank keeps its share of the span vectors: `<stage>/span_features/` under DDP
        (rank 0's checkpoint could not hold the other ranks' shares); None: in memory."""
        root = getattr(trainer, "default_root_dir", None)
        return Path(root) / "span_features" if world > 1 and root else None

    @staticmethod
    def extract(pl_module: pl.LightningModule, loader) -> SpanFeatures:
        return extract_span_features(
            pl_module.encoder,
            loader,
            pl_module.pooling,
            pl_module.feature_layer,
            device=pl_module.device,
            progress=False,
            suffix_len=pl_module.suffix_len,
        )

    # -- one clustering ---------------------------------------------------------------------------
    def recluster(self, pl_module, local: SpanFeatures, stamp: int, label_epoch: int, optimizers=()) -> dict:
        """Write `local` into the stores (each vector on the rank that owns its span, with the
        vectors recorded for other ranks since the last exchange), cluster every rank's spans for
        `label_epoch` and install the labels; after a previous clustering also re-initialise the
        cluster head."""
        started = time.perf_counter()
        self.store.update(local, stamp)
        exchange_pending(self.store)
        own = cluster_distributed(self.store.owned(), self.cluster, label_epoch, span_groups=self.groups)
        labels = gather_labels(own)
        previous, self.labels = self.labels, labels
        pl_module.set_pseudo_labels(labels)
        entry = {
            "label_epoch": label_epoch,
            "spans": int(labels.stats.get("spans", len(labels.span_ids))),
            "max_train_spans": labels.stats.get("max_train_spans"),
            "train_spans": labels.stats.get("train_spans"),
            "cluster_seconds": round(float(labels.stats["seconds"]), 3),
            "iterations": labels.stats.get("iterations"),
            "seed": labels.stats.get("seed"),
            "sizes": {key: labels.stats[key] for key in ("min", "median", "max", "empty", "k")},
            "nmi_prev": None,
            "ranks": _ranks_agree(labels),
        }
        if "group_k" in labels.stats:  # clustered within groups: each group's share of k, by name
            entry["group_k"] = {self.group_names[code]: k for code, k in labels.stats["group_k"].items()}
        entry.update(self.fine_type_agreement(labels))
        if previous is not None:
            before = previous.lookup(own.span_ids, missing=-1)
            k_before = len(previous.class_weights)
            entry["nmi_prev"] = round(reduced_nmi(before, own.assignments, k_before, self.cluster.k), 4)
            pl_module.reset_cluster_head(derive_seed(self.seed, label_epoch), optimizers)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        return entry

    def fine_type_agreement(self, labels: PseudoLabels) -> dict:
        """NMI and purity of the pseudo-labels against the fine types the corpus knows (a record of
        what the clusters capture; never a training signal)."""
        if self.reference is None:
            return {}
        fine = np.asarray(self.reference[np.asarray(labels.span_ids, dtype=np.int64)])
        known = fine >= 0
        if not known.any():
            return {}
        assigned, truth = np.asarray(labels.assignments)[known], fine[known]
        return {
            "fine_spans": int(known.sum()),
            "fine_nmi": round(nmi(assigned, truth), 4),
            "fine_purity": round(purity(assigned, truth), 4),
        }

    # -- refresh every N epochs -------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.perf_counter()

    def due(self, trainer: pl.Trainer) -> bool:
        """Refresh after the epoch that just ended? Every N-th, unless training stops here (or the
        refreshes go by steps)."""
        if self.every_n_steps:
            return False
        epoch = trainer.current_epoch
        last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch + 1
        return (epoch + 1) % self.every_n_epochs == 0 and not (last_epoch or self._out_of_steps(trainer))

    def missed(self, trainer: pl.Trainer, finished: int) -> bool:
        """At a resumed start: a refresh after epoch `finished` was due for a run that goes on, and
        did not happen (the stopped run's `max_epochs` ended there)."""
        if self.every_n_steps:  # a step's refresh is in the checkpoint saved at that step
            return False
        goes_on = (
            trainer.max_epochs is None or trainer.max_epochs < 0 or trainer.current_epoch < trainer.max_epochs
        )
        return (
            (finished + 1) % self.every_n_epochs == 0
            and goes_on
            and not self._out_of_steps(trainer)
            and not any(h.get("after_epoch") == finished for h in self.history)
        )

    @staticmethod
    def _out_of_steps(trainer: pl.Trainer) -> bool:
        return trainer.should_stop or (
            trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.due(trainer) and not any(h.get("after_epoch") == epoch for h in self.history):
            started = self._epoch_started
            entry = self.refresh(
                trainer, pl_module, epoch, time.perf_counter() - started if started else None
            )
            self.log_entry(pl_module, entry)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """With `every_n_steps`: refresh at every N-th optimizer step, unless it is the last one. The
        step keys the clustering's seeds and the history, so a step is refreshed once (a batch that
        accumulates gradients ends on the same step) and a resumed run refreshes as a straight one."""
        step = trainer.global_step
        if not self.every_n_steps or step == 0 or step % self.every_n_steps:
            return
        if step >= trainer.estimated_stepping_batches or self._out_of_steps(trainer):
            return
        if any(h.get("after_step") == step for h in self.history):
            return
        entry = self.refresh(trainer, pl_module, trainer.current_epoch, None, step=step)
        self.log_entry(pl_module, entry)

    def refresh(
        self, trainer: pl.Trainer, pl_module, epoch: int, epoch_seconds: float | None, step: int | None = None
    ) -> dict:
        """Re-cluster with the vectors of `epoch` (the labels of epoch + 1), or with those recorded up to
        optimizer step `step` within it (the labels of the steps after it); returns the history entry."""
        started = time.perf_counter()
        if self.features == "extract":
            local = self.extract(pl_module, trainer.datamodule.feature_dataloader())
        else:  # recorded while training: in the store, or pending for another rank
            local = self.store.empty()
        label_key = epoch + 1 if step is None else step  # the k-means and head seeds derive from it
        entry = self.recluster(pl_module, local, epoch, label_epoch=label_key, optimizers=trainer.optimizers)
        seconds = time.perf_counter() - started
        if step is not None:
            entry["after_step"] = step
        entry.update(
            kind="refresh",
            after_epoch=epoch,
            seconds=round(seconds, 3),
            epoch_seconds=round(epoch_seconds, 3) if epoch_seconds is not None else None,
            share=round(seconds / (epoch_seconds + seconds), 4) if epoch_seconds is not None else None,
        )
        self.history.append(entry)
        where = f"epoch {epoch}" if step is None else f"step {step}"
        log.info("fet: refresh after %s %s", where, json.dumps(entry))
        return entry

    @staticmethod
    def log_entry(pl_module: pl.LightningModule, entry: dict) -> None:
        sizes = entry["sizes"]
        values = {
            "nmi_prev": entry["nmi_prev"],
            "seconds": entry["seconds"],
            "share": entry["share"],
            "size_min": sizes["min"],
            "size_median": sizes["median"],
            "size_max": sizes["max"],
            "empty": sizes["empty"],
        }
        for name, value in values.items():
            if value is not None:
                pl_module.log(f"{pl_module.stage_name}/cluster/{name}", float(value), sync_dist=True)


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return round(sum(values) / len(values), 4) if values else None
