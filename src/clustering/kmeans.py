"""PCA-whitened, L2-normalised FAISS k-means: the pseudo-labels of stage 3 (FET).

The recipe of the CoFEE code (after DeepCluster): PCA to `pca_dim` with whitening (eigenvalue power
-0.5), L2 normalisation, FAISS k-means for `niter` iterations, every span assigned to its nearest
centroid, and classes weighted by inverse cluster variance. What we add:

- The k-means seed is derived from `(seed, epoch)`, so every refresh starts from a different, yet
  reproducible, initialisation (the FAISS default seed is a constant; faiss #983).
- GPU FAISS is used when the FAISS build has GPUs and `use_gpu` is "auto" or True, on the device
  `gpu_device` names, or else torch's current CUDA device (the local rank's under DDP): never a
  hard-coded GPU 0. `use_gpu=True` without a GPU build or GPU is an error, not a silent CPU run.
- All points train k-means unless `max_points_per_centroid` is set (FAISS caps the training set at
  256 x k by default and subsamples silently; faiss #1679). PCA trains on at most `pca_max_train`
  spans (a seeded sample: a covariance of 100k x 384 is already exact to three digits).
- Empty clusters (possible when points repeat: FAISS splits empty clusters while training, but the
  final nearest-centroid assignment can still leave a centroid with no span) are counted, not fatal.
  Their class weight is 0: no span carries their label, so the weight never enters a loss, and they
  stay out of the mean-1 normalisation of the others.
- Too few spans for k (or for PCA) is a `TooFewSpansError` naming the counts.
- `niter` is a cap: FAISS stops once the objective no longer changes (later iterations would change
  nothing); `ClusterResult.iterations` says how many ran.

Class weights ("inverse_variance"): a cluster's variance is the mean squared distance of its spans to
its centroid in the normalised space; its weight is 1 / variance, normalised to mean 1 over non-empty
clusters. A cluster of one span (variance 0) gets the variance of the tightest cluster with two or
more spans (one point says nothing about spread; an infinite weight would swamp the loss). "uniform"
gives every non-empty cluster weight 1.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from cofee.config import CLASS_WEIGHTS, FETClusterConfig, bounded, check_bounds, gpu_flag
from cofee.utils.errors import CofeeError, ConfigError


class ClusteringError(CofeeError):
    """Clustering cannot run as configured (too few spans, no GPU where one was required)."""


class TooFewSpansError(ClusteringError):
    def __init__(self, n_spans: int, k: int, pca_dim: int | None = None):
        self.n_spans, self.k, self.pca_dim = n_spans, k, pca_dim
        if pca_dim is not None and n_spans <= pca_dim:
            need = f"more spans than pca_dim={pca_dim} to train the PCA"
        else:
            need = f"at least k={k} spans to form {k} clusters"
        super().__init__(f"cannot cluster {n_spans} spans: k-means needs {need}")

    def __reduce__(self):  # picklable, so it crosses process boundaries intact
        return (type(self), (self.n_spans, self.k, self.pca_dim))


@dataclass
class ClusterConfig:
    k: int = bounded(23, ge=1)  # the CoFEE E-commerce run; choose per corpus
    pca_dim: int | None = bounded(
        128, ge=0
    )  # None or 0: no PCA (and no whitening); above the input dim: the input dim
    eigen_power: float = -0.5  # -0.5 whitens, 0 only rotates
    pca_max_train: int | None = bounded(
        100_000, ge=2
    )  # PCA trains on a seeded sample of at most this many spans
    normalize: bool = True  # L2-normalise after PCA
    niter: int = bounded(60, ge=1)  # at most: FAISS stops early when the objective no longer changes
    nredo: int = bounded(1, ge=1)  # k-means restarts; FAISS keeps the best objective
    seed: int = 0  # k-means and PCA-sample seeds derive from (seed, epoch)
    max_points_per_centroid: int | None = bounded(
        None, ge=1
    )  # None: train on every span (no silent subsampling)
    class_weights: str = "inverse_variance"  # or "uniform"
    use_gpu: bool | str = "auto"  # "auto": GPU FAISS when one is there; True: require it; False: CPU
    gpu_device: int | None = None  # None: torch's current CUDA device (the local rank's under DDP)
    threads: int | None = None  # FAISS OpenMP threads for the call (None: FAISS's current setting)
    verbose: bool = False

    @classmethod
    def from_stage(cls, stage: FETClusterConfig, run_seed: int) -> ClusterConfig:
        """FET's `cluster` block as a clustering config; its seed defaults to the run's."""
        return cls(
            k=stage.k,
            pca_dim=stage.pca_dim,
            eigen_power=stage.eigen_power,
            niter=stage.niter,
            nredo=stage.nredo,
            seed=stage.seed if stage.seed is not None else run_seed,
            class_weights=stage.class_weights,
            use_gpu=stage.use_gpu,
            threads=stage.threads,
        )

    def validate(self, prefix: str = "cluster") -> None:
        """`ConfigError` naming `<prefix>.<field>` for a value that cannot work."""
        check_bounds(self, prefix)
        if self.class_weights not in CLASS_WEIGHTS:
            raise ConfigError(
                f"{prefix}.class_weights", f"'{self.class_weights}' is not one of {', '.join(CLASS_WEIGHTS)}"
            )
        if gpu_flag(self.use_gpu) is None:
            raise ConfigError(f"{prefix}.use_gpu", f"must be auto, true or false, got {self.use_gpu!r}")


@dataclass
class ClusterResult:
    assignments: np.ndarray  # [N] int64, cluster of each span, in the order of the input rows
    centroids: np.ndarray  # [k, d] float32, in the PCA-whitened, normalised space
    class_weights: np.ndarray  # [k] float32, mean 1 over non-empty clusters, 0 for empty ones
    sizes: np.ndarray  # [k] int64
    variances: np.ndarray  # [k] float32, mean squared distance to the centroid (0 when empty)
    seconds: float  # PCA + k-means + assignment, wall clock
    empty: int  # clusters with no span
    seed: int  # the FAISS seed used, derived from (cfg.seed, epoch)
    epoch: int
    dim: int  # dimension clustered (after PCA)
    objective: float  # final k-means objective (sum of squared distances on the training points)
    iterations: int  # run, over all restarts: FAISS stops a run early once its objective stops changing
    on_gpu: bool
    config: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.sizes.shape[0])

    def sizes_summary(self) -> dict:
        """min / median / max cluster size, the number of empty clusters, and k."""
        return {
            "min": int(self.sizes.min()),
            "median": float(np.median(self.sizes)),
            "max": int(self.sizes.max()),
            "empty": int(self.empty),
            "k": self.k,
        }


def derive_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed from (seed, epoch): deterministic, and unrelated across epochs."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0] & 0x7FFFFFFF)


def _pick_gpu(cfg: ClusterConfig) -> int | None:
    """The GPU device to run FAISS on, or None for CPU."""
    import faiss

    flag = gpu_flag(cfg.use_gpu)
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if flag is False or (flag == "auto" and gpus == 0):
        return None
    if gpus == 0:
        raise ClusteringError(
            "cluster.use_gpu=true but FAISS sees no GPU (a CPU-only faiss build, or no visible device); "
            "set use_gpu=auto or false"
        )
    device = cfg.gpu_device
    if device is None:
        import torch

        device = torch.cuda.current_device() if torch.cuda.is_available() else 0
    if not 0 <= device < gpus:
        raise ClusteringError(f"GPU device {device} is not one of the {gpus} GPUs FAISS sees")
    return device


def _preprocess(x: np.ndarray, cfg: ClusterConfig, seed: int) -> np.ndarray:
    import faiss

    n, d_in = x.shape
    if cfg.pca_dim:
        d_out = min(cfg.pca_dim, d_in)
        sample = x
        if cfg.pca_max_train is not None and n > cfg.pca_max_train:
            rows = np.sort(np.random.default_rng(seed).choice(n, cfg.pca_max_train, replace=False))
            sample = x[rows]
        pca = faiss.PCAMatrix(d_in, d_out, float(cfg.eigen_power))
        pca.max_points_per_d = max(1, -(-sample.shape[0] // d_in))  # never subsample again inside FAISS
        pca.train(np.ascontiguousarray(sample))
        x = pca.apply(x)
        if not np.isfinite(x).all():
            raise ClusteringError(
                f"PCA whitening produced non-finite values: the {n} span vectors span fewer than "
                f"pca_dim={d_out} directions; lower cluster.pca_dim or set cluster.eigen_power=0"
            )
    else:
        x = np.array(x, dtype=np.float32, order="C", copy=True)  # normalised in place below: not the caller's
    if cfg.normalize:
        faiss.normalize_L2(x)
    return x


def _class_weights(sizes: np.ndarray, variances: np.ndarray, scheme: str) -> np.ndarray:
    filled = sizes > 0
    weights = np.zeros(sizes.shape[0], dtype=np.float64)
    if scheme == "uniform" or not filled.any():
        weights[filled] = 1.0
        return weights.astype(np.float32)
    spread = (sizes > 1) & (variances > 0)
    floor = variances[spread].min() if spread.any() else 1.0
    weights[filled] = 1.0 / np.maximum(variances[filled], floor)
    weights[filled] /= weights[filled].mean()
    return weights.astype(np.float32)


def cluster_features(features: np.ndarray, cfg: ClusterConfig, epoch: int = 0) -> ClusterResult:
    """Cluster span features [N, D] into `cfg.k` pseudo-classes; rows keep their input order.

    Runs in the calling process (FAISS threads and fork do not mix; docs/design.md, "FAISS"), on CPU or
    the GPU `_pick_gpu` chooses. Deterministic on CPU for a given (features, cfg, epoch) and thread count.
    """
    import faiss

    cfg.validate()
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be [spans, dim], got shape {x.shape}")
    n = x.shape[0]
    pca_dim = min(cfg.pca_dim, x.shape[1]) if cfg.pca_dim else None
    if n < cfg.k or (pca_dim is not None and n <= pca_dim):
        raise TooFewSpansError(n, cfg.k, pca_dim if pca_dim is not None and n <= pca_dim else None)
    if not np.isfinite(x).all():
        raise ClusteringError("span features contain NaN or infinite values")

    started = time.perf_counter()
    seed = derive_seed(cfg.seed, epoch)
    threads = faiss.omp_get_max_threads()
    if cfg.threads:
        faiss.omp_set_num_threads(int(cfg.threads))
    try:
        device = _pick_gpu(cfg)
        x = _preprocess(x, cfg, seed)
        d = x.shape[1]
        kmeans = faiss.Kmeans(
            d,
            int(cfg.k),
            niter=int(cfg.niter),
            nredo=int(cfg.nredo),
            seed=seed,
            verbose=bool(cfg.verbose),
            max_points_per_centroid=int(cfg.max_points_per_centroid or max(n // cfg.k + 1, 256)),
        )
        resources = None
        if device is not None:
            resources = faiss.StandardGpuResources()
            kmeans.index = faiss.index_cpu_to_gpu(resources, device, faiss.IndexFlatL2(d))
        objective = float(kmeans.train(x))
        distances, labels = kmeans.index.search(x, 1)
    finally:
        if cfg.threads:
            faiss.omp_set_num_threads(threads)
    assignments = labels[:, 0].astype(np.int64)
    sizes = np.bincount(assignments, minlength=cfg.k).astype(np.int64)
    sums = np.bincount(assignments, weights=np.maximum(distances[:, 0], 0.0), minlength=cfg.k)
    variances = np.divide(sums, sizes, out=np.zeros(cfg.k), where=sizes > 0)
    return ClusterResult(
        assignments=assignments,
        centroids=np.asarray(kmeans.centroids, dtype=np.float32),
        class_weights=_class_weights(sizes, variances, cfg.class_weights),
        sizes=sizes,
        variances=variances.astype(np.float32),
        seconds=time.perf_counter() - started,
        empty=int((sizes == 0).sum()),
        seed=seed,
        epoch=int(epoch),
        dim=int(d),
        objective=objective,
        iterations=len(kmeans.iteration_stats or ()),
        on_gpu=device is not None,
        config=asdict(cfg),
    )
