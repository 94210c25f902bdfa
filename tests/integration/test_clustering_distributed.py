"""Pseudo-labels under DDP: 2 real processes on gloo (CPU) against a single-process run.

Each rank ends with the labels of its own spans only; their union must be the single-process labels
of all spans, with every span in the training sample and with a sample capped by `max_train_spans`.
Each rank's `SpanFeatureStore` holds the vectors of the spans it owns only, whichever rank recorded
them."""

import socket
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from cofee.clustering import (
    ClusterConfig,
    SpanFeatures,
    SpanFeatureStore,
    TooFewSpansError,
    cluster_distributed,
    dedup_sorted,
    exchange_pending,
    gather_features,
    gather_labels,
    nmi,
    reduced_nmi,
)

CFG = {"k": 6, "pca_dim": 8, "niter": 20, "seed": 7}
CAPPED = {**CFG, "max_train_spans": 120, "pca_max_train": 60}  # a sample of 120 of the 300 spans
EPOCH = 3
FIRST_ID = 1000  # synthetic span ids start here; a store counts from 0


def synthetic(n=300, dim=16, k=6):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, dim)) * 3
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, dim))
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    return SpanFeatures(x.astype(np.float32), ids)


def span_groups(n=300) -> np.ndarray:
    """A coarse-type code per span id (-1: left out), as ClusterRefreshCallback derives them."""
    lookup = np.full(FIRST_ID + n, -1, dtype=np.int64)
    lookup[FIRST_ID:] = np.random.default_rng(2).integers(-1, 3, n)
    return lookup


def shards(data: SpanFeatures):
    """Two overlapping shards in scrambled order; rank 1 ends with a padding repeat of rank 0's first
    span, as DistributedSampler padding would give it."""
    n = len(data)
    rng = np.random.default_rng(1)
    rank0 = rng.permutation(np.arange(0, 170))
    rank1 = np.concatenate([rng.permutation(np.arange(150, n)), rank0[:1]])
    return [SpanFeatures(data.features[r], data.span_ids[r]) for r in (rank0, rank1)]


def owned(data: SpanFeatures, rank: int, world: int = 2) -> SpanFeatures:
    """The spans a rank assigns (span id modulo world size, as ClusterRefreshCallback deals them)."""
    mine = data.span_ids % world == rank
    return SpanFeatures(data.features[mine], data.span_ids[mine])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        local = shards(synthetic())[rank]
        everywhere = gather_features(local, all_ranks=True)
        on_root = gather_features(local)
        nothing = SpanFeatures(np.zeros((0, 16), np.float32), np.zeros(0, np.int64))
        one_sided = gather_features(local if rank == 0 else nothing, all_ranks=True)  # rank 1 holds none
        mine = owned(synthetic(), rank)
        labels = cluster_distributed(mine, ClusterConfig(**CFG), EPOCH)
        span_ids, assignments, weights = labels
        capped = cluster_distributed(mine, ClusterConfig(**CAPPED), EPOCH)
        grouped = cluster_distributed(mine, ClusterConfig(**CAPPED), EPOCH, span_groups=span_groups())
        everyone = gather_labels(capped)
        # NMI of the capped against the full labels, from per-rank counts summed across ranks
        same = np.searchsorted(capped.span_ids, span_ids)
        nmi_reduced = reduced_nmi(assignments, capped.assignments[same], 6, 6)
        # the sharded store: each rank records its (overlapping) shard, then the exchange
        store = SpanFeatureStore(300, 16, rank, world, Path(out_dir) / "store")
        store.update(SpanFeatures(local.features, local.span_ids - FIRST_ID), epoch=0)
        recorded_pending = store.pending
        received = exchange_pending(store)
        stored = store.owned()
        from_store = cluster_distributed(
            SpanFeatures(stored.features, stored.span_ids + FIRST_ID), ClusterConfig(**CFG), EPOCH
        )
        store_state = store.state_dict()
        try:
            cluster_distributed(local, ClusterConfig(**{**CFG, "k": 500, "pca_dim": None}), EPOCH)
            error = ""
        except TooFewSpansError as exc:
            error = str(exc)
        np.savez(
            Path(out_dir) / f"rank{rank}.npz",
            gathered=everywhere.features,
            gathered_ids=everywhere.span_ids,
            root_is_none=on_root is None,
            one_sided_ids=one_sided.span_ids,
            span_ids=span_ids,
            assignments=assignments,
            weights=weights,
            stats_spans=labels.stats["spans"],
            capped_span_ids=capped.span_ids,
            capped_assignments=capped.assignments,
            capped_weights=capped.class_weights,
            capped_train=capped.stats["train_spans"],
            capped_sizes=[capped.stats[key] for key in ("min", "max", "empty")],
            grouped_ids=grouped.span_ids,
            grouped_assignments=grouped.assignments,
            grouped_weights=grouped.class_weights,
            grouped_k=sorted(grouped.stats["group_k"].items()),
            everyone_ids=everyone.span_ids,
            everyone_assignments=everyone.assignments,
            nmi_reduced=nmi_reduced,
            error=error,
            store_rows=store.features.shape[0],
            store_ids=stored.span_ids + FIRST_ID,
            store_features=np.asarray(stored.features),
            store_pending=[recorded_pending, received, store.pending],
            store_labels=from_store.assignments,
            store_state_has_vectors="features" in store_state,
        )
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_agree_with_a_single_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the children inherit it: 2 processes on a small machine
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]

    data = synthetic()
    single = cluster_distributed(data, ClusterConfig(**CFG), EPOCH)  # no process group: local
    single_capped = cluster_distributed(data, ClusterConfig(**CAPPED), EPOCH)
    assert single_capped.stats["train_spans"] == 120 and single.stats["train_spans"] == 300
    assert single_capped.stats["max_train_spans"] == 120
    for name, reference in (("", single), ("capped_", single_capped)):
        # each rank holds the labels of its own spans only; their union is the single-process run
        own = [(out[f"{name}span_ids"], out[f"{name}assignments"]) for out in ranks]
        for (ids, assigned), shard in zip(own, (owned(data, 0), owned(data, 1))):
            np.testing.assert_array_equal(ids, np.unique(shard.span_ids))
            np.testing.assert_array_equal(assigned, reference.lookup(ids))
        union_ids = np.unique(np.concatenate([ids for ids, _ in own]))
        np.testing.assert_array_equal(union_ids, reference.span_ids)
        for out in ranks:  # class weights from per-rank sums: equal up to the order of the additions
            np.testing.assert_allclose(out[f"{name}weights"], reference.class_weights, rtol=1e-5)
    # within groups: rank 0 fits one PCA and a k-means per group on the gathered sample, every rank
    # assigns its own grouped spans within their group; the union is the single-process run
    single_grouped = cluster_distributed(data, ClusterConfig(**CAPPED), EPOCH, span_groups=span_groups())
    owners = single_grouped.model.centroid_groups
    for r, out in enumerate(ranks):
        mine = owned(data, r)
        kept = mine.span_ids[span_groups()[mine.span_ids] >= 0]
        np.testing.assert_array_equal(out["grouped_ids"], kept)
        np.testing.assert_array_equal(out["grouped_assignments"], single_grouped.lookup(kept))
        np.testing.assert_allclose(out["grouped_weights"], single_grouped.class_weights, rtol=1e-5)
        assert out["grouped_k"].tolist() == [
            list(kv) for kv in sorted(single_grouped.stats["group_k"].items())
        ]
        np.testing.assert_array_equal(owners[out["grouped_assignments"]], span_groups()[kept])
    for out in ranks:
        assert int(out["capped_train"]) == 120
        assert out["capped_sizes"].tolist() == ranks[0]["capped_sizes"].tolist()  # the same on every rank
        # gather_labels: every span's label on every rank
        np.testing.assert_array_equal(out["everyone_ids"], single_capped.span_ids)
        np.testing.assert_array_equal(out["everyone_assignments"], single_capped.assignments)
        expected = nmi(single.assignments, single_capped.assignments)
        assert abs(float(out["nmi_reduced"]) - expected) < 1e-9
    for r, out in enumerate(ranks):
        # the gather: every span once, sorted by id, the padding repeat dropped
        np.testing.assert_array_equal(out["gathered_ids"], data.span_ids)
        np.testing.assert_array_equal(out["gathered"], data.features)
        assert bool(out["root_is_none"]) == (r == 1)
        np.testing.assert_array_equal(out["one_sided_ids"], np.sort(shards(data)[0].span_ids))
        assert int(out["stats_spans"]) == 300  # per-rank counts, summed
        # an error on the clustering rank reaches every rank (no hang)
        assert "cannot cluster 300 spans" in str(out["error"])
    assert single.stats["k"] == 6 and single.result is not None
    local_shards = shards(data)
    for r, out in enumerate(ranks):
        # each rank stores its own spans only (150 of 300), every one of them, whoever recorded it
        mine = owned(data, r)
        assert int(out["store_rows"]) == len(mine) == 150
        np.testing.assert_array_equal(out["store_ids"], mine.span_ids)
        np.testing.assert_array_equal(out["store_features"], mine.features)
        others = int((local_shards[r].span_ids % 2 != r).sum())
        assert out["store_pending"].tolist()[0] == others and out["store_pending"].tolist()[2] == 0
        assert not bool(out["store_state_has_vectors"])  # on disk, where each rank reopens its own
        np.testing.assert_array_equal(out["store_labels"], single.lookup(mine.span_ids))
    for r in range(2):
        shape = np.load(tmp_path / "store" / f"rank{r}-of-2.features.npy", mmap_mode="r").shape
        assert shape == (150, 16)
    # resumed on one process: the two ranks' files dealt out again, every span's vector back
    state = {"n_spans": 300, "dim": 16, "world": 2, "folder": str(tmp_path / "store")}
    whole = SpanFeatureStore.from_state(state, rank=0, world=1)
    np.testing.assert_array_equal(whole.owned().span_ids + FIRST_ID, data.span_ids)
    np.testing.assert_array_equal(np.asarray(whole.owned().features), data.features)


def test_local_fallback_dedups_and_looks_up():
    data = synthetic(n=60)
    doubled = SpanFeatures(
        np.concatenate([data.features[::-1], data.features[:5]]),
        np.concatenate([data.span_ids[::-1], data.span_ids[:5]]),
    )
    merged = dedup_sorted(doubled)
    np.testing.assert_array_equal(merged.span_ids, data.span_ids)
    np.testing.assert_array_equal(merged.features, data.features)
    labels = cluster_distributed(doubled, ClusterConfig(k=3, pca_dim=4, niter=5), epoch=0)
    assert labels.assignments.shape == (60,) and labels.class_weights.shape == (3,)
    query = data.span_ids[[5, 0, 59]]
    np.testing.assert_array_equal(labels.lookup(query), labels.assignments[[5, 0, 59]])
    with pytest.raises(KeyError, match="span id 7 has no pseudo-label"):
        labels.lookup([7])
    assert labels.lookup([7, int(data.span_ids[1])], missing=-100).tolist() == [-100, labels.assignments[1]]
