"""Stage 3 support: span features, PCA-whitened FAISS k-means pseudo-labels, and their DDP plumbing.

- `features`: `extract_span_features(encoder, batches, mode, layer)` -> `SpanFeatures(features, span_ids)`;
  `SpanFeatureStore`, the newest vector of each span a rank owns (in memory or memory-mapped)
- `kmeans`: `ClusterConfig`, `cluster_features(features, cfg, epoch)` -> `ClusterResult`; its halves
  `fit_clusters` (a bounded, seeded training sample -> `ClusterModel`) and `assign_features`
- `distributed`: `gather_features`, `cluster_distributed` -> `PseudoLabels` of the rank's own spans,
  `gather_labels` (every span's, on every rank), `reduced_nmi`, `route_rows` and `exchange_pending`
  (vectors recorded on one rank handed to the rank that owns their span)
- `quality`: `nmi`, `nmi_from_counts`, `purity`, `random_assignment_baseline`, `cluster_quality`

Nothing here depends on Lightning; FAISS is imported only when clustering runs.
"""

from cofee.clustering.distributed import (
    PseudoLabels,
    cluster_distributed,
    dedup_sorted,
    exchange_pending,
    gather_features,
    gather_labels,
    reduced_nmi,
    route_rows,
)
from cofee.clustering.features import (
    SpanFeatures,
    SpanFeatureStore,
    extract_span_features,
    load_span_features,
    save_span_features,
)
from cofee.clustering.kmeans import (
    ClusterConfig,
    ClusteringError,
    ClusterModel,
    ClusterResult,
    TooFewSpansError,
    assign_features,
    cluster_features,
    derive_seed,
    fit_clusters,
)
from cofee.clustering.quality import cluster_quality, nmi, nmi_from_counts, purity, random_assignment_baseline

__all__ = [
    "ClusterConfig",
    "ClusterModel",
    "ClusterResult",
    "ClusteringError",
    "PseudoLabels",
    "SpanFeatureStore",
    "SpanFeatures",
    "TooFewSpansError",
    "assign_features",
    "cluster_distributed",
    "cluster_features",
    "cluster_quality",
    "dedup_sorted",
    "derive_seed",
    "exchange_pending",
    "extract_span_features",
    "fit_clusters",
    "gather_features",
    "gather_labels",
    "load_span_features",
    "nmi",
    "nmi_from_counts",
    "purity",
    "random_assignment_baseline",
    "reduced_nmi",
    "route_rows",
    "save_span_features",
]
