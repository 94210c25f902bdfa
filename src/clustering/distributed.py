"""Pseudo-labels under torch.distributed: gather every rank's span features, cluster once, broadcast.

Each rank extracts features for its own shard of spans. `gather_features` collects them with their
global span ids (variable length per rank: lengths are exchanged first and the tensors padded to the
longest shard), drops the duplicates `DistributedSampler`-style padding adds (the copy from the lowest
rank wins), and sorts by span id, so the merged set is the same whatever the world size or sharding.
`cluster_distributed` runs k-means once, on rank `src` (0), in that process (FAISS and forked workers
do not mix), and broadcasts span ids, assignments and class weights: every rank ends with identical
pseudo-labels for every span, not only its own. An error on the clustering rank (too few spans, say)
is broadcast too and raised on every rank, so no rank hangs in a collective.

Works on any backend: tensors travel on the CPU, except under NCCL, where they go through torch's
current CUDA device (set per rank by Lightning). Without an initialised process group (or with one
rank) everything runs locally.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from cofee.clustering.features import SpanFeatures
from cofee.clustering.kmeans import ClusterConfig, ClusteringError, ClusterResult, cluster_features


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def dedup_sorted(features: SpanFeatures) -> SpanFeatures:
    """One row per span id (the first occurrence), sorted by span id."""
    ids = np.asarray(features.span_ids, dtype=np.int64)
    unique, first = np.unique(ids, return_index=True)
    if unique.shape[0] == ids.shape[0] and (ids.shape[0] < 2 or bool(np.all(ids[1:] > ids[:-1]))):
        return SpanFeatures(np.asarray(features.features, dtype=np.float32), ids)
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


@dataclass
class PseudoLabels:
    """Cluster ids of every span, sorted by span id; unpacks as (span_ids, assignments, class_weights)."""

    span_ids: np.ndarray  # [N] int64, sorted, unique
    assignments: np.ndarray  # [N] int64
    class_weights: np.ndarray  # [k] float32
    stats: dict = field(default_factory=dict)  # sizes summary, seconds, seed, ... (on every rank)
    result: ClusterResult | None = None  # the full result, on the clustering rank only

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


def _stats(result: ClusterResult, n: int) -> dict:
    return {
        **result.sizes_summary(),
        "spans": n,
        "seconds": result.seconds,
        "seed": result.seed,
        "epoch": result.epoch,
        "objective": result.objective,
        "iterations": result.iterations,
        "on_gpu": result.on_gpu,
    }


def _local(features: SpanFeatures, cfg: ClusterConfig, epoch: int) -> PseudoLabels:
    merged = dedup_sorted(features)
    result = cluster_features(merged.features, cfg, epoch)
    return PseudoLabels(
        merged.span_ids, result.assignments, result.class_weights, _stats(result, len(merged)), result
    )


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return ClusteringError(f"clustering failed: {exc!r}")


def cluster_distributed(local: SpanFeatures, cfg: ClusterConfig, epoch: int, src: int = 0) -> PseudoLabels:
    """Pseudo-labels for the spans of all ranks, identical on every rank (a collective call).

    Rank `src` gathers the features, clusters them with `cluster_features(cfg, epoch)` and broadcasts
    the result; with no process group it clusters `local` alone. Unpacks as
    `span_ids, assignments, class_weights = cluster_distributed(...)`; `.stats` has the cluster-size
    summary and timing on every rank, `.result` the full `ClusterResult` on rank `src`.
    """
    if not _distributed():
        return _local(local, cfg, epoch)
    rank, device = dist.get_rank(), _comm_device()
    merged = gather_features(local, all_ranks=False, dst=src)
    header: list = [None]
    labels, failure = None, None
    if rank == src:
        try:
            labels = _local(merged, cfg, epoch)
            header = [{"n": len(labels.span_ids), "k": len(labels.class_weights), "stats": labels.stats}]
        except Exception as exc:  # every rank must learn of it, or the others wait forever
            failure = exc
            header = [{"error": _portable(exc)}]
    dist.broadcast_object_list(header, src=src, device=device)
    info = header[0]
    if failure is not None:
        raise failure
    if "error" in info:
        raise info["error"]
    n, k = info["n"], info["k"]
    if rank == src:
        ids = torch.from_numpy(labels.span_ids).to(device)
        assignments = torch.from_numpy(labels.assignments).to(device)
        weights = torch.from_numpy(labels.class_weights).to(device)
    else:
        ids = torch.empty(n, dtype=torch.long, device=device)
        assignments = torch.empty(n, dtype=torch.long, device=device)
        weights = torch.empty(k, dtype=torch.float32, device=device)
    for tensor in (ids, assignments, weights):
        dist.broadcast(tensor, src=src)
    if rank == src:
        return labels
    return PseudoLabels(ids.cpu().numpy(), assignments.cpu().numpy(), weights.cpu().numpy(), info["stats"])
