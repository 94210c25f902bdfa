import numpy as np
import pytest

from cofee.clustering import (
    ClusterConfig,
    ClusteringError,
    TooFewSpansError,
    cluster_features,
    cluster_quality,
    derive_seed,
    nmi,
    purity,
    random_assignment_baseline,
)
from cofee.utils.errors import CofeeError, ConfigError


def blobs(n_per=80, k=8, dim=64, spread=0.3, seed=0):
    """k Gaussian blobs in `dim` dimensions: unit-norm-ish centres 3 apart, isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 3.0 / np.sqrt(dim) * 2
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + rng.normal(scale=spread / np.sqrt(dim) * 2, size=(labels.size, dim))
    order = rng.permutation(labels.size)
    return x[order].astype(np.float32), labels[order]


def test_pca_whitening_kmeans_recovers_blobs():
    x, labels = blobs()
    result = cluster_features(x, ClusterConfig(k=8, pca_dim=16, niter=30, seed=1))
    assert result.assignments.dtype == np.int64 and result.assignments.shape == labels.shape
    assert result.centroids.shape == (8, 16) and result.dim == 16 and 1 <= result.iterations <= 30
    assert nmi(result.assignments, labels) > 0.9
    quality = cluster_quality(result.assignments, labels, k=8)
    assert quality["purity"] > 0.9 and quality["random_nmi"] < 0.2 and quality["random_purity"] < 0.5
    assert result.sizes.sum() == labels.size and result.empty == 0
    summary = result.sizes_summary()
    assert summary["min"] <= summary["median"] <= summary["max"] and summary["k"] == 8
    assert result.class_weights.dtype == np.float32
    assert result.class_weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert not result.on_gpu


def test_same_seed_same_assignment_and_epoch_changes_the_seed():
    x = np.random.default_rng(3).normal(size=(400, 24)).astype(np.float32)  # no structure: init matters
    cfg = ClusterConfig(k=12, pca_dim=8, niter=10, seed=5)
    first, again = cluster_features(x, cfg, epoch=0), cluster_features(x, cfg, epoch=0)
    np.testing.assert_array_equal(first.assignments, again.assignments)
    np.testing.assert_array_equal(first.class_weights, again.class_weights)
    later = cluster_features(x, cfg, epoch=1)
    assert later.seed == derive_seed(5, 1) != first.seed == derive_seed(5, 0)
    assert not np.array_equal(first.assignments, later.assignments)
    assert derive_seed(6, 0) not in {derive_seed(5, 0), derive_seed(5, 1)}


def test_empty_clusters_are_counted_and_weighted_zero():
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(size=(3, 8)).astype(np.float32), 20, axis=0)  # 3 distinct points, k=6
    before = x.copy()
    result = cluster_features(x, ClusterConfig(k=6, pca_dim=None, niter=10))
    np.testing.assert_array_equal(x, before)  # normalisation works on a copy
    assert result.empty == int((result.sizes == 0).sum()) >= 1
    assert result.sizes_summary()["min"] == 0
    assert np.all(result.class_weights[result.sizes == 0] == 0)
    filled = result.class_weights[result.sizes > 0]
    assert np.all(filled > 0) and filled.mean() == pytest.approx(1.0, rel=1e-5)
    assert set(np.unique(result.assignments)) == set(np.flatnonzero(result.sizes))


def test_inverse_variance_weights_favour_tight_clusters():
    rng = np.random.default_rng(0)
    tight = rng.normal(loc=(10.0, 0.0), scale=0.05, size=(100, 2))
    loose = rng.normal(loc=(-10.0, 0.0), scale=0.5, size=(100, 2))
    x = np.concatenate([tight, loose]).astype(np.float32)
    cfg = ClusterConfig(k=2, pca_dim=None, normalize=False, niter=10)
    result = cluster_features(x, cfg)
    tight_cluster, loose_cluster = result.assignments[0], result.assignments[-1]
    assert tight_cluster != loose_cluster
    w = result.class_weights
    assert w[tight_cluster] > 10 * w[loose_cluster] and w.mean() == pytest.approx(1.0, rel=1e-5)
    uniform = cluster_features(x, ClusterConfig(k=2, pca_dim=None, normalize=False, class_weights="uniform"))
    np.testing.assert_array_equal(uniform.class_weights, [1.0, 1.0])


def test_weight_rule_for_singletons_and_empty_clusters():
    from cofee.clustering.kmeans import _class_weights

    sizes = np.array([10, 1, 0, 5])
    variances = np.array([0.5, 0.0, 0.0, 0.25])
    w = _class_weights(sizes, variances, "inverse_variance")
    # the singleton counts as tight as the tightest cluster of two or more; the empty one gets 0
    assert w[2] == 0 and w[1] == pytest.approx(w[3]) and w[3] == pytest.approx(2 * w[0])
    assert w[[0, 1, 3]].mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(_class_weights(sizes, variances, "uniform"), [1, 1, 0, 1])
    np.testing.assert_array_equal(_class_weights(np.ones(3), np.zeros(3), "inverse_variance"), [1, 1, 1])


def test_too_few_spans_is_a_clear_error():
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    with pytest.raises(TooFewSpansError, match="cannot cluster 5 spans.*at least k=10") as info:
        cluster_features(x, ClusterConfig(k=10, pca_dim=None))
    assert isinstance(info.value, CofeeError) and (info.value.n_spans, info.value.k) == (5, 10)
    x = np.random.default_rng(0).normal(size=(20, 64)).astype(np.float32)
    with pytest.raises(TooFewSpansError, match="20 spans.*more spans than pca_dim=32"):
        cluster_features(x, ClusterConfig(k=3, pca_dim=32))
    import pickle

    err = pickle.loads(pickle.dumps(TooFewSpansError(5, 10)))
    assert str(err) == str(TooFewSpansError(5, 10))


def test_config_errors_and_gpu_requirement():
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    with pytest.raises(ConfigError, match="cluster.class_weights"):
        cluster_features(x, ClusterConfig(k=2, class_weights="balanced"))
    with pytest.raises(ConfigError, match="cluster.use_gpu"):
        cluster_features(x, ClusterConfig(k=2, use_gpu="maybe"))
    import faiss

    if faiss.get_num_gpus() == 0:
        with pytest.raises(ClusteringError, match="sees no GPU"):
            cluster_features(x, ClusterConfig(k=2, pca_dim=None, use_gpu=True))
        assert not cluster_features(x, ClusterConfig(k=2, pca_dim=None, use_gpu="auto")).on_gpu


def test_pca_sample_cap_and_dimension_clamp():
    x, labels = blobs(n_per=60, k=5, dim=12)
    result = cluster_features(x, ClusterConfig(k=5, pca_dim=64, pca_max_train=100, niter=20))
    assert result.dim == 12  # pca_dim above the input width: rotate and whiten at full width
    assert nmi(result.assignments, labels) > 0.9


def test_quality_helpers():
    assert purity([0, 0, 1, 1], ["a", "a", "b", "c"]) == 0.75
    assert purity([], []) == 1.0
    assert nmi([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
    labels = np.repeat(np.arange(4), 250)
    baseline = random_assignment_baseline(labels, 4, seed=0)
    assert baseline["nmi"] < 0.05 and 0.25 <= baseline["purity"] < 0.35
    with pytest.raises(ValueError, match="differ in length"):
        nmi([0, 1], [0])
