"""FET's levers: clusters within each coarse type, typed spans only, the prototype objective, and a
learning rate of the cluster head's own; each off by default, where it changes nothing."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cofee.callbacks.cluster_refresh import ClusterRefreshCallback
from cofee.clustering import (
    ClusterConfig,
    ClusteringError,
    SpanFeatures,
    cluster_distributed,
    cluster_features,
)
from cofee.clustering.kmeans import split_k
from cofee.config import OptimConfig, StageOptimConfig, validate
from cofee.data.alignment import IGNORE_INDEX
from cofee.stages.esi import ESIModule
from cofee.stages.fet import FETModule, PrototypeHead
from cofee.utils.errors import ConfigError
from tests.support import NEE_TYPES

CFG = ClusterConfig(k=7, pca_dim=8, niter=20, seed=3)


def grouped_blobs(n=360, dim=16, seed=0):
    """Spans of three coarse types, each type a few blobs of its own."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 3, n)
    blob = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, 3, dim)) * 3
    x = centres[groups, blob] + rng.normal(size=(n, dim))
    return x.astype(np.float32), groups


def test_split_k_deals_k_in_proportion_at_least_one_each():
    shares = split_k([600, 300, 90, 10], 23)
    assert shares.sum() == 23 and (shares >= 1).all()
    assert shares[0] > shares[1] > shares[2] >= shares[3]  # more spans, more clusters
    assert split_k([1, 50], 5).tolist() == [1, 4]  # never more clusters than a group's spans
    assert split_k([5, 5, 5], 3).tolist() == [1, 1, 1]
    with pytest.raises(ClusteringError, match="k=2 clusters cannot cover 3 span groups"):
        split_k([5, 5, 5], 2)


def test_within_types_keeps_each_type_in_its_own_id_range():
    x, groups = grouped_blobs()
    result = cluster_features(x, CFG, epoch=1, groups=groups)
    owners = result.model.centroid_groups
    assert owners.tolist() == sorted(owners.tolist()) and len(owners) == CFG.k  # one run of ids a type
    shares = np.bincount(owners, minlength=3)
    assert shares.sum() == CFG.k and (shares >= 1).all()
    assert shares.tolist() == split_k(np.bincount(groups), CFG.k).tolist()
    for code in range(3):  # a type's spans take only its own cluster ids
        assert set(result.assignments[groups == code]) <= set(np.flatnonzero(owners == code))
    again = cluster_features(x, CFG, epoch=1, groups=groups)
    assert np.array_equal(result.assignments, again.assignments)  # deterministic with a seed
    other = cluster_features(x, ClusterConfig(k=7, pca_dim=8, niter=20, seed=4), epoch=1, groups=groups)
    assert not np.array_equal(result.model.centroids, other.model.centroids)
    assert cluster_features(x, CFG, epoch=1).model.centroid_groups is None  # without groups: one k-means


def test_spans_out_of_every_group_get_no_label_and_the_loss_ignores_them():
    x, groups = grouped_blobs()
    ids = np.arange(1000, 1000 + len(x))
    span_groups = np.full(1000 + len(x), -1)
    span_groups[ids] = np.where(groups == 2, -1, 0)  # type 2 plays the unknown type: typed spans only
    labels = cluster_distributed(SpanFeatures(x, ids), CFG, 0, span_groups=span_groups)
    assert labels.span_ids.tolist() == ids[groups != 2].tolist() and labels.stats["spans"] == len(
        labels.span_ids
    )
    assert labels.stats["group_k"] == {0: CFG.k}
    unknown = ids[groups == 2][:3]
    assert labels.lookup(unknown, missing=IGNORE_INDEX).tolist() == [IGNORE_INDEX] * 3
    # one group is one k-means over the typed spans alone
    alone = cluster_features(x[groups != 2], CFG, 0, span_ids=ids[groups != 2])
    assert np.array_equal(labels.assignments, alone.assignments)


def _datamodule(coarse: list[str]):
    vocab = sorted(set(coarse))
    codes = np.array([vocab.index(c) for c in coarse], dtype=np.int8)
    return SimpleNamespace(num_spans=len(coarse), span_types=SimpleNamespace(codes=codes, vocab=vocab))


@pytest.mark.parametrize(
    ("within", "spans", "expected", "names"),
    [
        (False, "all", None, []),
        (False, "typed", [0, -1, 0, 0, -1], ["typed"]),
        (True, "all", [1, 0, 2, 1, 0], ["?", "LOC", "PER"]),
        (True, "typed", [1, -1, 2, 1, -1], ["?", "LOC", "PER"]),
    ],
)
def test_the_callback_groups_spans_by_coarse_type(within, spans, expected, names):
    callback = ClusterRefreshCallback(ClusterConfig(k=3, pca_dim=None), within_types=within, spans=spans)
    groups, group_names = callback.span_groups(_datamodule(["LOC", "?", "PER", "LOC", "?"]))
    assert (groups if groups is None else groups.tolist()) == expected and group_names == names


def test_grouping_without_coarse_types_is_an_error():
    callback = ClusterRefreshCallback(ClusterConfig(k=3, pca_dim=None), within_types=True)
    with pytest.raises(ClusteringError, match=r"stages\.fet\.cluster\.within_types"):
        callback.span_groups(SimpleNamespace(num_spans=5))


def _prototype_model(dim=32, k=4):
    x = np.random.default_rng(0).normal(size=(60, dim)).astype(np.float32)
    return x, cluster_features(x, ClusterConfig(k=k, pca_dim=8, niter=10, seed=1)).model


def test_prototype_logits_are_cosines_to_the_centroids_in_the_clustered_space():
    x, model = _prototype_model()
    head = PrototypeHead(32, 4, 8, temperature=0.5)
    head.install(model)
    logits = head(torch.from_numpy(x[:5]))
    assert logits.shape == (5, 4) and not list(head.parameters())
    z = model.transform(x[:5])  # FAISS's PCA, whitening and normalisation
    centroids = model.centroids / np.linalg.norm(model.centroids, axis=1, keepdims=True)
    np.testing.assert_allclose(logits.numpy(), z @ centroids.T / 0.5, atol=1e-4)
    with pytest.raises(ValueError, match="PCA"):
        PrototypeHead(32, 4, 16, temperature=0.5).install(model)


def test_the_prototype_loss_reaches_the_span_vectors_and_prefers_the_right_prototype(tiny_encoder):
    x, model = _prototype_model()
    module = FETModule(
        tiny_encoder,
        OptimConfig(),
        NEE_TYPES,
        k=4,
        cluster_loss="prototype",
        prototype_temperature=0.1,
        pca_dim=8,
    )
    module.set_pseudo_labels(_labels(model))
    assert torch.equal(
        module.cluster_head.prototypes[0],
        torch.nn.functional.normalize(torch.from_numpy(model.centroids[0]), dim=0),
    )
    vectors = torch.from_numpy(x[:6]).requires_grad_(True)
    logits = module.cluster_head(vectors)
    nearest = logits.argmax(-1)
    right = module.cluster_loss(logits, nearest)
    wrong = module.cluster_loss(logits, (nearest + 1) % 4)
    assert right.item() < wrong.item()
    right.backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0
    before = module.cluster_head.prototypes.clone()
    module.reset_cluster_head(seed=1)  # nothing trained to re-initialise: the prototypes stay
    assert torch.equal(module.cluster_head.prototypes, before)


def _labels(model, n=60):
    from cofee.clustering import PseudoLabels

    return PseudoLabels(np.arange(n), np.arange(n) % 4, np.ones(4, np.float32), {}, None, model)


def test_the_cluster_head_learns_at_its_own_rate_when_one_is_given(tiny_encoder):
    def rates(**optim):
        module = FETModule(tiny_encoder, StageOptimConfig(head_lr=1e-3, **optim), NEE_TYPES, k=4)
        module._trainer = SimpleNamespace(estimated_stepping_batches=10)
        groups = module.configure_optimizers()["optimizer"].param_groups
        cluster = {id(p) for p in module.cluster_head.parameters()}
        return {g["initial_lr"] for g in groups if {id(p) for p in g["params"]} & cluster}, len(groups)

    assert rates() == ({1e-3}, 6)  # null: head_lr, the groups as before
    assert rates(cluster_head_lr=0.05) == ({0.05}, 6)
    esi = ESIModule(tiny_encoder, StageOptimConfig(cluster_head_lr=0.05))
    with pytest.raises(ConfigError, match=r"stages\.esi\.optim\.cluster_head_lr"):
        esi.fresh_rates()


def test_the_levers_are_checked_and_their_defaults_change_no_finished_stage(compose_cfg):
    from cofee.pipeline.curriculum import input_changes, stage_inputs

    root = validate(compose_cfg(["stages.fet.cluster_loss=prototype", "stages.fet.cluster.spans=typed"]))
    assert root.stages.fet.cluster_loss == "prototype" and root.stages.fet.cluster.spans == "typed"
    for override, key in (
        ("stages.fet.cluster_loss=centroid", "stages.fet.cluster_loss"),
        ("stages.fet.cluster.spans=known", "stages.fet.cluster.spans"),
        ("stages.fet.prototype_temperature=0", "stages.fet.prototype_temperature"),
        ("stages.fet.optim.cluster_head_lr=0", "stages.fet.optim.cluster_head_lr"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(compose_cfg([override]))
    with pytest.raises(ConfigError, match=r"stages\.fet\.optim\.cluster_head_lr"):
        validate(compose_cfg(["stages.fet.cluster_loss=prototype", "stages.fet.optim.cluster_head_lr=0.01"]))

    def inputs(stage, *overrides):
        return stage_inputs(validate(compose_cfg(list(overrides))), stage, "parent")

    for stage in ("esi", "nee", "fet"):
        recorded = inputs(stage)  # as a version without the levers wrote it
        del recorded["stages"][stage]["optim"]["cluster_head_lr"]
        if stage == "fet":
            for key in ("cluster_loss", "prototype_temperature"):
                del recorded["stages"]["fet"][key]
            for key in ("within_types", "spans"):
                del recorded["stages"]["fet"]["cluster"][key]
        assert input_changes(stage, recorded, inputs(stage)) == []
    changed = input_changes("fet", recorded, inputs("fet", "stages.fet.cluster.within_types=true"))
    assert [c[0] for c in changed] == ["stages.fet.cluster.within_types"]
