"""How good are the clusters: NMI and purity against reference labels, and a random baseline.

Use them to compare pseudo-labels with coarse (or gold fine) types, and consecutive refreshes with
each other (NMI between epoch e-1's and epoch e's assignments, aligned by span id). Purity rises
towards 1 as k grows whatever the clustering, so read it beside `random_assignment_baseline`.
"""

from __future__ import annotations

import numpy as np


def _codes(values) -> np.ndarray:
    return np.unique(np.asarray(values), return_inverse=True)[1].ravel()


def nmi(a, b) -> float:
    """Normalized mutual information (arithmetic normalisation, sklearn's default) of two labelings."""
    from sklearn.metrics import normalized_mutual_info_score

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape[0]} and {b.shape[0]}")
    return float(normalized_mutual_info_score(a, b))


def purity(assignments, labels) -> float:
    """Share of spans whose label is their cluster's most frequent label (1.0 for no spans)."""
    clusters, truth = _codes(assignments), _codes(labels)
    if clusters.shape != truth.shape:
        raise ValueError(f"labelings differ in length: {clusters.shape[0]} and {truth.shape[0]}")
    if clusters.size == 0:
        return 1.0
    table = np.zeros((clusters.max() + 1, truth.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, truth), 1)
    return float(table.max(axis=1).sum() / clusters.size)


def random_assignment_baseline(labels, k: int, seed: int = 0) -> dict:
    """NMI and purity of a uniformly random assignment of the same spans to k clusters."""
    labels = np.asarray(labels)
    random = np.random.default_rng(seed).integers(0, k, size=labels.shape[0])
    return {"nmi": nmi(random, labels), "purity": purity(random, labels)}


def cluster_quality(assignments, labels, k: int | None = None, seed: int = 0) -> dict:
    """NMI and purity of `assignments` against `labels`, with the random baseline for the same k."""
    k = int(k if k is not None else np.unique(np.asarray(assignments)).size)
    baseline = random_assignment_baseline(labels, k, seed)
    return {
        "nmi": nmi(assignments, labels),
        "purity": purity(assignments, labels),
        "random_nmi": baseline["nmi"],
        "random_purity": baseline["purity"],
    }


def nmi_from_counts(table) -> float:
    """`nmi` of two labelings given only their contingency counts (rows: one labeling, columns: the
    other), as sklearn computes it; so ranks can sum their counts instead of sending their labels."""
    from sklearn.metrics import mutual_info_score

    table = np.asarray(table, dtype=np.int64)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    rows, cols = table.shape
    if rows == cols == 1 or rows == cols == 0:
        return 1.0
    mi = mutual_info_score(None, None, contingency=table)
    if mi == 0:
        return 0.0
    total = table.sum()

    def entropy(counts):
        p = counts[counts > 0] / total
        return float(-(p * np.log(p)).sum())

    normalizer = max((entropy(table.sum(axis=1)) + entropy(table.sum(axis=0))) / 2, np.finfo("float64").eps)
    return float(mi / normalizer)
