"""Pseudo-labels under torch.distributed: train on a sample gathered once, assign on every rank.

Each rank holds the span features of its own shard. `cluster_distributed` picks the training sample
by global span id (`kmeans.training_rows`' rule: the smallest seeded hashes of the ids, seed from
(seed, epoch)), so the ranks agree on it without exchanging ids: each sends its `max_train_spans`
smallest hashes, every rank computes the same threshold, and only the sample's features travel to
rank `src` (`gather_features`: lengths exchanged first, padded to the longest, duplicates that
sampler padding adds dropped, the copy from the lowest rank wins, sorted by span id). Rank `src`
trains the PCA and k-means on the sample and broadcasts the `ClusterModel` (the PCA matrix and the
centroids); every rank assigns its own spans, in chunks, and keeps only those labels. Cluster sizes
and the sums of squared distances (class weights) are per-rank counts summed across ranks, so every
rank has the same weights and size summary. The result is the single-process one: the union of the
ranks' labels is what `cluster_features` gives the union of their spans with the same seed. An
error on the clustering rank (too few spans, say), or on any rank while assigning, is broadcast and
raised on every rank, so no rank hangs in a collective.

`gather_labels` hands every rank the labels of every span, when a rank trains on spans of other
ranks' shards (a sampler that reshuffles the shards every epoch): 16 bytes a span, not 4 x dim.
`reduced_nmi` is the NMI between two labelings of the same spans from per-rank contingency counts.

Works on any backend: tensors travel on the CPU, except under NCCL, where they go through torch's
current CUDA device (set per rank by Lightning). Without an initialised process group (or with one
rank) everything runs locally.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from cofee.clustering.features import SpanFeatures, SpanFeatureStore
from cofee.clustering.kmeans import (
    ClusterConfig,
    ClusteringError,
    ClusterModel,
    ClusterResult,
    SampleRows,
    assign_features,
    check_sample,
    cluster_features,
    cluster_stats,
    derive_seed,
    fit_clusters,
    id_priorities,
    sample_threshold,
)
from cofee.clustering.quality import nmi_from_counts


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def dedup_sorted(features: SpanFeatures) -> SpanFeatures:
    """One row per span id (the first occurrence), sorted by span id."""
    ids = np.asarray(features.span_ids, dtype=np.int64)
    if ids.shape[0] < 2 or bool(np.all(ids[1:] > ids[:-1])):  # as it is: rows are read when sliced
        return SpanFeatures(features.features, ids)
    unique, first = np.unique(ids, return_index=True)
    return SpanFeatures(np.asarray(features.features, dtype=np.float32)[first], unique)


def gather_features(features: SpanFeatures, all_ranks: bool = False, dst: int = 0) -> SpanFeatures | None:
    """All ranks' span features, deduplicated by span id and sorted by it.

    Returned on rank `dst` only (None elsewhere) unless `all_ranks`, which hands every rank the whole
    set (memory: world size x longest shard x dim on each rank while gathering). A collective: every
    rank must call it. Without a process group it returns `dedup_sorted(features)`.
    """
    if not _distributed():
        return dedup_sorted(features)
    device = _comm_device()
    world, rank = dist.get_world_size(), dist.get_rank()
    local_x = np.asarray(features.features, dtype=np.float32)
    local_ids = np.asarray(features.span_ids, dtype=np.int64)
    n_local = int(local_ids.shape[0])
    d_local = int(local_x.shape[1]) if local_x.ndim == 2 else 0
    if n_local and local_x.shape[0] != n_local:
        raise ValueError(f"rank {rank}: {local_x.shape[0]} feature rows but {n_local} span ids")

    shape = torch.tensor([n_local, d_local], dtype=torch.long, device=device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    counts = [int(s[0]) for s in shapes]
    dims = {int(s[1]) for s, c in zip(shapes, counts) if c > 0}
    if len(dims) > 1:
        raise ValueError(f"ranks hold span features of different widths: {sorted(dims)}")
    dim = dims.pop() if dims else d_local
    longest = max(max(counts), 1)

    x = torch.zeros((longest, dim), dtype=torch.float32, device=device)
    ids = torch.full((longest,), -1, dtype=torch.long, device=device)
    if n_local:
        x[:n_local] = torch.from_numpy(np.ascontiguousarray(local_x)).to(device)
        ids[:n_local] = torch.from_numpy(local_ids).to(device)

    if all_ranks:
        xs = [torch.empty_like(x) for _ in range(world)]
        id_lists = [torch.empty_like(ids) for _ in range(world)]
        dist.all_gather(xs, x)
        dist.all_gather(id_lists, ids)
    else:
        receive = rank == dst
        xs = [torch.empty_like(x) for _ in range(world)] if receive else None
        id_lists = [torch.empty_like(ids) for _ in range(world)] if receive else None
        dist.gather(x, xs, dst=dst)
        dist.gather(ids, id_lists, dst=dst)
        if not receive:
            return None
    merged = SpanFeatures(
        torch.cat([t[:c] for t, c in zip(xs, counts)]).cpu().numpy(),
        torch.cat([t[:c] for t, c in zip(id_lists, counts)]).cpu().numpy(),
    )
    return dedup_sorted(merged)


def _all_gather_1d(values: np.ndarray) -> list[np.ndarray]:
    """Every rank's int64 vector (lengths may differ), in rank order."""
    device, world = _comm_device(), dist.get_world_size()
    values = np.ascontiguousarray(values, dtype=np.int64)
    size = torch.tensor([values.shape[0]], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(c) for c in sizes]
    padded = torch.zeros(max(max(counts), 1), dtype=torch.long, device=device)
    padded[: values.shape[0]] = torch.from_numpy(values).to(device)
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return [t[:c].cpu().numpy() for t, c in zip(out, counts)]


def _sum(values: np.ndarray) -> np.ndarray:
    """Element-wise sum over ranks (int64 or float64)."""
    tensor = torch.from_numpy(np.ascontiguousarray(values)).to(_comm_device())
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def route_rows(rows: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Hand each row to the rank `owners` names (a collective): returns the rows addressed to this
    rank, by sending rank, each rank's in its order. A rank receives only its own rows: one gather
    per destination rank, padded to the most rows any rank sends there. `rows`: a 1-d numpy array
    (structured dtypes travel as bytes). Without a process group: `rows` (every owner is this rank)."""
    if not _distributed():
        return rows
    device, world, rank = _comm_device(), dist.get_world_size(), dist.get_rank()
    owners = np.asarray(owners, dtype=np.int64)
    order = np.argsort(owners, kind="stable")
    counts = np.bincount(owners, minlength=world).astype(np.int64)
    sent = torch.from_numpy(counts).to(device)
    table = [torch.zeros_like(sent) for _ in range(world)]
    dist.all_gather(table, sent)
    table = np.stack([t.cpu().numpy() for t in table])  # [from, to]
    width = rows.dtype.itemsize
    raw = np.ascontiguousarray(rows[order]).view(np.uint8).reshape(-1, width) if rows.shape[0] else None
    starts = np.concatenate([[0], np.cumsum(counts)])
    received = None
    for dst in range(world):
        longest = max(int(table[:, dst].max()), 1)
        block = torch.zeros((longest, width), dtype=torch.uint8, device=device)
        mine = int(counts[dst])
        if mine:
            block[:mine] = torch.from_numpy(raw[starts[dst] : starts[dst] + mine]).to(device)
        parts = [torch.empty_like(block) for _ in range(world)] if rank == dst else None
        dist.gather(block, parts, dst=dst)
        if rank == dst:
            got = [p[: int(table[src, dst])].cpu().numpy() for src, p in enumerate(parts)]
            received = np.ascontiguousarray(np.concatenate(got)).view(rows.dtype).reshape(-1)
    return received


def exchange_pending(store: SpanFeatureStore) -> int:
    """Every rank's pending vectors (recorded of spans another rank owns) written on their owner (a
    collective; without a process group the store's own pending rows, if any). Returns the rows this
    rank received."""
    pending = store.take_pending()
    received = route_rows(pending, pending["id"] % store.world)
    store.apply(received["id"], received["x"], received["epoch"])
    return int(received.shape[0])


@dataclass
class PseudoLabels:
    """Cluster ids of every span, sorted by span id; unpacks as (span_ids, assignments, class_weights)."""

    span_ids: np.ndarray  # [N] int64, sorted, unique
    assignments: np.ndarray  # [N] int64
    class_weights: np.ndarray  # [k] float32
    stats: dict = field(default_factory=dict)  # sizes summary, seconds, seed, ... (on every rank)
    result: ClusterResult | None = None  # the full result, without a process group only
    model: ClusterModel | None = None  # the PCA and centroids the spans were assigned with

    def __iter__(self):
        return iter((self.span_ids, self.assignments, self.class_weights))

    def lookup(self, span_ids, missing: int | None = None) -> np.ndarray:
        """Cluster ids of the given span ids; an unknown id raises KeyError, or gets `missing`."""
        query = np.asarray(span_ids, dtype=np.int64)
        if self.span_ids.shape[0] == 0:
            found = np.zeros(query.shape, dtype=bool)
            where = np.zeros(query.shape, dtype=np.int64)
        else:
            where = np.clip(np.searchsorted(self.span_ids, query), 0, self.span_ids.shape[0] - 1)
            found = self.span_ids[where] == query
        if not found.all() and missing is None:
            raise KeyError(f"span id {int(query[~found][0])} has no pseudo-label")
        out = np.full(query.shape, missing if missing is not None else 0, dtype=np.int64)
        out[found] = self.assignments[where[found]]
        return out


def _stats(model: ClusterModel, sizes: np.ndarray, cfg: ClusterConfig, seconds: float) -> dict:
    stats = {
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "max": int(sizes.max()),
        "empty": int((sizes == 0).sum()),
        "k": int(sizes.shape[0]),
        "spans": int(sizes.sum()),
        "train_spans": model.train_spans,
        "max_train_spans": cfg.max_train_spans,
        "sizes_from": "per-rank counts summed across ranks",
        "seconds": seconds,
        "train_seconds": model.seconds,
        "seed": model.seed,
        "epoch": model.epoch,
        "objective": model.objective,
        "iterations": model.iterations,
        "on_gpu": model.on_gpu,
    }
    if model.centroid_groups is not None:  # clustered within groups: each group's share of k
        codes, shares = np.unique(model.centroid_groups, return_counts=True)
        stats["group_k"] = {int(code): int(share) for code, share in zip(codes, shares)}
    return stats


def keep_grouped(local: SpanFeatures, span_groups) -> tuple[SpanFeatures, np.ndarray]:
    """The spans of `local` that `span_groups` (a group code per span id, -1: not clustered) puts in a
    group, rows read only when sliced, and their group codes."""
    groups = np.asarray(span_groups[np.asarray(local.span_ids, dtype=np.int64)], dtype=np.int64)
    keep = groups >= 0
    if keep.all():
        return local, groups
    rows = np.flatnonzero(keep)
    return SpanFeatures(SampleRows(local.features, rows), local.span_ids[rows]), groups[rows]


def _local(features: SpanFeatures, cfg: ClusterConfig, epoch: int, span_groups=None) -> PseudoLabels:
    merged, groups = dedup_sorted(features), None
    if span_groups is not None:
        merged, groups = keep_grouped(merged, span_groups)
    result = cluster_features(merged.features, cfg, epoch, span_ids=merged.span_ids, groups=groups)
    return PseudoLabels(
        merged.span_ids,
        result.assignments,
        result.class_weights,
        _stats(result.model, result.sizes, cfg, result.seconds),
        result,
        result.model,
    )


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return ClusteringError(f"clustering failed: {exc!r}")


def _raise_anywhere(failure: BaseException | None) -> None:
    """A collective: raise on every rank the first failure of any rank (None: nobody failed)."""
    errors: list = [None] * dist.get_world_size()
    dist.all_gather_object(errors, _portable(failure) if failure is not None else None)
    if failure is not None:
        raise failure
    for error in errors:
        if error is not None:
            raise error


def cluster_distributed(
    local: SpanFeatures, cfg: ClusterConfig, epoch: int, src: int = 0, span_groups=None
) -> PseudoLabels:
    """Pseudo-labels of this rank's spans, from one clustering of all ranks' spans (a collective call).

    The training sample (at most `cfg.max_train_spans` spans, by span id) is gathered on rank `src`,
    which trains the PCA and k-means (seeds from (cfg.seed, epoch)) and broadcasts them; each rank
    assigns its own spans (`local`, deduplicated and sorted by id) and returns only their labels.
    Ranks should hold disjoint shards; a span on several ranks is sampled once and labelled by each.
    `.stats` (the same on every rank): cluster sizes summed over ranks, spans assigned in all,
    `train_spans` (the sample used), `max_train_spans`, seconds, seed. `.model`: the PCA and centroids.
    With no process group it clusters `local` alone (`.result` holds the full `ClusterResult`).

    `span_groups` (a group code per span id, the same on every rank; -1: not clustered): spans of
    group -1 get no label (they are left out of the result), the others are clustered within their
    group (`fit_clusters`); the sample is drawn from the grouped spans, and rank `src` reads its rows'
    groups from `span_groups` too, so nothing more travels.
    """
    if not _distributed():
        return _local(local, cfg, epoch, span_groups)
    cfg.validate()
    started = time.perf_counter()
    rank, device = dist.get_rank(), _comm_device()
    local, groups = dedup_sorted(local), None
    if span_groups is not None:
        local, groups = keep_grouped(local, span_groups)
    seed = derive_seed(cfg.seed, epoch)
    priorities = id_priorities(local.span_ids, seed)
    candidates = priorities
    if cfg.max_train_spans is not None and priorities.shape[0] > cfg.max_train_spans:
        candidates = np.partition(priorities, cfg.max_train_spans - 1)[: cfg.max_train_spans]
    union = np.unique(np.concatenate(_all_gather_1d(candidates)))
    threshold = sample_threshold(union, cfg.max_train_spans)
    n_sample = int(union.shape[0] if threshold is None else cfg.max_train_spans)
    dims = {int(d) for d in _all_gather_1d(np.array([local.dim if len(local) else -1]))} - {-1}
    check_sample(n_sample, cfg, max(dims) if dims else 0)  # the same decision on every rank
    chosen = slice(None) if threshold is None else priorities <= threshold
    sample = gather_features(
        SpanFeatures(np.asarray(local.features[chosen], dtype=np.float32), local.span_ids[chosen]), dst=src
    )

    header: list = [None]
    failure = None
    if rank == src:
        try:
            sample_groups = None if span_groups is None else span_groups[sample.span_ids]
            header = [{"model": fit_clusters(sample.features, sample.span_ids, cfg, epoch, sample_groups)}]
        except Exception as exc:  # every rank must learn of it, or the others wait forever
            failure = exc
            header = [{"error": _portable(exc)}]
    del sample
    dist.broadcast_object_list(header, src=src, device=device)
    info = header[0]
    if failure is not None:
        raise failure
    if "error" in info:
        raise info["error"]
    model: ClusterModel = info["model"]

    failure = None
    try:
        assignments, distances = assign_features(local.features, model, cfg, groups)
    except Exception as exc:
        failure = exc
    _raise_anywhere(failure)
    sizes = _sum(np.bincount(assignments, minlength=cfg.k).astype(np.int64))
    sums = _sum(np.bincount(assignments, weights=distances.astype(np.float64), minlength=cfg.k))
    _, weights = cluster_stats(sizes, sums, cfg.class_weights)
    stats = _stats(model, sizes, cfg, time.perf_counter() - started)
    return PseudoLabels(local.span_ids, assignments, weights, stats, None, model)


def gather_labels(labels: PseudoLabels) -> PseudoLabels:
    """Every rank's labels on every rank, by span id (a collective; the lowest rank's wins a duplicate).
    Without a process group: `labels` itself."""
    if not _distributed():
        return labels
    ids = np.concatenate(_all_gather_1d(labels.span_ids))
    assignments = np.concatenate(_all_gather_1d(labels.assignments))
    unique, first = np.unique(ids, return_index=True)
    return PseudoLabels(
        unique, assignments[first], labels.class_weights, dict(labels.stats), None, labels.model
    )


def reduced_nmi(previous: np.ndarray, current: np.ndarray, k_previous: int, k: int) -> float:
    """NMI between two labelings of this rank's spans and of every other rank's (a collective when
    distributed): contingency counts per rank, summed across ranks. -1 in `previous`: no label then."""
    previous = np.asarray(previous, dtype=np.int64) + 1
    table = np.zeros((k_previous + 1, k), dtype=np.int64)
    np.add.at(table, (previous, np.asarray(current, dtype=np.int64)), 1)
    if _distributed():
        table = _sum(table.ravel()).reshape(table.shape)
    return nmi_from_counts(table)
