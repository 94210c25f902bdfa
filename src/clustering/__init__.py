"""Stage 3 support: span features, PCA-whitened FAISS k-means pseudo-labels, and their DDP plumbing.

- `features`: `extract_span_features(encoder, batches, mode, layer)` -> `SpanFeatures(features, span_ids)`
- `kmeans`: `ClusterConfig`, `cluster_features(features, cfg, epoch)` -> `ClusterResult`
- `distributed`: `gather_features`, `cluster_distributed` -> `PseudoLabels` (identical on every rank)
- `quality`: `nmi`, `purity`, `random_assignment_baseline`, `cluster_quality`

Nothing here depends on Lightning; FAISS is imported only when clustering runs.
"""

from cofee.clustering.distributed import PseudoLabels, cluster_distributed, dedup_sorted, gather_features
from cofee.clustering.features import (
    SpanFeatures,
    extract_span_features,
    load_span_features,
    save_span_features,
)
from cofee.clustering.kmeans import (
    ClusterConfig,
    ClusteringError,
    ClusterResult,
    TooFewSpansError,
    cluster_features,
    derive_seed,
)
from cofee.clustering.quality import cluster_quality, nmi, purity, random_assignment_baseline

__all__ = [
    "ClusterConfig",
    "ClusterResult",
    "ClusteringError",
    "PseudoLabels",
    "SpanFeatures",
    "TooFewSpansError",
    "cluster_distributed",
    "cluster_features",
    "cluster_quality",
    "dedup_sorted",
    "derive_seed",
    "extract_span_features",
    "gather_features",
    "load_span_features",
    "nmi",
    "purity",
    "random_assignment_baseline",
    "save_span_features",
]
