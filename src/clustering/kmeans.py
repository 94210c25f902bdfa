"""PCA-whitened, L2-normalised FAISS k-means: the pseudo-labels of stage 3 (FET).

The recipe of the CoFEE code (after DeepCluster): PCA to `pca_dim` with whitening (eigenvalue power
-0.5), L2 normalisation, FAISS k-means for `niter` iterations, every span assigned to its nearest
centroid, and classes weighted by inverse cluster variance. What we add:

- The k-means seed is derived from `(seed, epoch)`, so every refresh starts from a different, yet
  reproducible, initialisation (the FAISS default seed is a constant; faiss #983).
- GPU FAISS is used when the FAISS build has GPUs and `use_gpu` is "auto" or True, on the device
  `gpu_device` names, or else torch's current CUDA device (the local rank's under DDP): never a
  hard-coded GPU 0. `use_gpu=True` without a GPU build or GPU is an error, not a silent CPU run.
- PCA and k-means train on a sample of at most `max_train_spans` spans, chosen by global span id
  (`train_sample`: the spans of the smallest seeded hashes of their ids, seed from (seed, epoch)), so
  the sample is the same whatever the number of ranks or the sharding; then every span is assigned
  to its nearest centroid, in chunks (`assign_features`), so memory is bounded by the sample and a
  chunk, not by the corpus. The sample is read in chunks too (`SampleRows`): the PCA reads its own
  rows at full width, k-means holds the sample only in the PCA space. The sample is explicit and recorded (`ClusterResult.train_spans`); FAISS's
  own silent subsampling (256 x k points by default; faiss #1679) is switched off unless
  `max_points_per_centroid` is set. PCA trains on at most `pca_max_train` spans of the sample (the
  ones of the smallest hashes: a covariance of 100k x 384 is already exact to three digits).
- `fit_clusters` (sample -> `ClusterModel`: the PCA matrix and the centroids, small enough to
  broadcast) and `assign_features` (any rank's own spans -> assignments) are the two halves that
  `cofee.clustering.distributed` runs on different ranks; `cluster_features` runs both in one process.
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
    )  # None: train on every span of the sample (no silent subsampling)
    max_train_spans: int | None = bounded(
        200_000, ge=1
    )  # PCA and k-means train on a seeded sample of at most this many spans, by span id; None: all
    assign_chunk: int = bounded(65_536, ge=1)  # spans transformed and assigned at a time
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
            max_train_spans=stage.max_train_spans,
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
        if self.max_train_spans is not None and (
            self.max_train_spans < self.k or (self.pca_dim and self.max_train_spans <= self.pca_dim)
        ):
            raise ConfigError(
                f"{prefix}.max_train_spans",
                f"{self.max_train_spans} cannot train k={self.k} clusters"
                + (
                    f" after a PCA to {self.pca_dim} dims (need more spans than pca_dim)"
                    if self.pca_dim
                    else ""
                ),
            )


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
    train_spans: int = 0  # spans the PCA and k-means trained on (the sample), at most max_train_spans
    model: ClusterModel | None = None  # the PCA and centroids the spans were assigned with

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


_SIGN = np.uint64(1 << 63)


def id_priorities(span_ids, seed: int) -> np.ndarray:
    """A seeded hash of each span id (splitmix64: a bijection, so no two ids tie), as int64 in the
    order of the unsigned hash. The training sample is the spans of the smallest priorities: a rule
    on the id alone, so every rank, and a single process, picks the same spans."""
    with np.errstate(over="ignore"):
        z = np.asarray(span_ids, dtype=np.int64).astype(np.uint64)
        z = z + np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z ^ _SIGN).view(np.int64)


def sample_threshold(priorities: np.ndarray, max_train: int | None) -> int | None:
    """The largest priority of the `max_train` smallest (unique) priorities; None: every span."""
    priorities = np.unique(np.asarray(priorities, dtype=np.int64))
    if max_train is None or priorities.shape[0] <= max_train:
        return None
    return int(priorities[max_train - 1])


@dataclass
class ClusterModel:
    """What assigning needs, small enough to broadcast: the PCA (FAISS-serialised) and the centroids."""

    centroids: np.ndarray  # [k, d] float32, in the PCA-whitened, normalised space
    pca: tuple[np.ndarray, np.ndarray] | None  # the trained PCA as (A [d_out, d_in], b [d_out]); None: none
    normalize: bool
    seed: int
    epoch: int
    objective: float
    iterations: int
    train_spans: int  # the sample it trained on
    seconds: float  # PCA + k-means training
    on_gpu: bool
    # within groups: the group of each centroid (a group's centroids are one run of ids, groups in
    # ascending order); None: one k-means over every span
    centroid_groups: np.ndarray | None = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_transform"}

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Span vectors -> the clustered space (PCA, whitening, L2 normalisation); a new array."""
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.pca is not None:
            pca = self.__dict__.get("_transform")
            if pca is None:  # FAISS's own apply (x A^T + b), on every rank from the same matrices
                matrix, bias = self.pca
                pca = faiss.LinearTransform(int(matrix.shape[1]), int(matrix.shape[0]), True)
                faiss.copy_array_to_vector(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), pca.A)
                faiss.copy_array_to_vector(np.ascontiguousarray(bias, dtype=np.float32), pca.b)
                pca.is_trained = True
                self.__dict__["_transform"] = pca
            x = pca.apply(x)
            if not np.isfinite(x).all():
                raise ClusteringError(
                    f"PCA whitening produced non-finite values: the span vectors span fewer than "
                    f"pca_dim={pca.d_out} directions; lower cluster.pca_dim or set cluster.eigen_power=0"
                )
        else:
            x = np.array(x, dtype=np.float32, order="C", copy=True)  # normalised in place: not the caller's
        if self.normalize:
            faiss.normalize_L2(x)
        return x


class _FaissThreads:
    """`cfg.threads` OpenMP threads for FAISS inside the block, the previous setting after it."""

    def __init__(self, cfg: ClusterConfig):
        self.threads = cfg.threads

    def __enter__(self):
        import faiss

        self.before = faiss.omp_get_max_threads()
        if self.threads:
            faiss.omp_set_num_threads(int(self.threads))

    def __exit__(self, *exc):
        import faiss

        if self.threads:
            faiss.omp_set_num_threads(self.before)


def check_sample(n_sample: int, cfg: ClusterConfig, dim: int) -> None:
    """`TooFewSpansError` when `n_sample` training spans cannot make `cfg.k` clusters (or the PCA)."""
    pca_dim = min(cfg.pca_dim, dim) if cfg.pca_dim else None
    if n_sample < cfg.k or (pca_dim is not None and n_sample <= pca_dim):
        raise TooFewSpansError(
            n_sample, cfg.k, pca_dim if pca_dim is not None and n_sample <= pca_dim else None
        )


def _finite(block: np.ndarray) -> np.ndarray:
    if not np.isfinite(block).all():
        raise ClusteringError("span features contain NaN or infinite values")
    return block


def _rows(sample, key) -> np.ndarray:
    return _finite(np.ascontiguousarray(sample[key], dtype=np.float32))


class SampleRows:
    """Rows `rows` of `features` (an array, a memmap, anything indexed by an array of rows), read only
    when sliced: the training sample as `fit_clusters` reads it, never copied whole."""

    def __init__(self, features, rows: np.ndarray):
        self.features, self.rows = features, np.asarray(rows, dtype=np.int64)
        self.shape = (int(self.rows.shape[0]), int(features.shape[1]))

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.features[self.rows[key]], dtype=np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # np.asarray(rows): all of them, read now
        return self[:].astype(dtype or np.float32, copy=False)


def split_k(counts, k: int) -> np.ndarray:
    """`k` clusters dealt to groups of `counts` spans: one each, then each next cluster to the group
    with the most spans per cluster it would have (D'Hondt), never more clusters than a group's spans.
    Deterministic (a tie goes to the first group); sums to `k`."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.shape[0] == 0 or (counts < 1).any():
        raise ValueError(f"group sizes must be positive, got {counts.tolist()}")
    if k < counts.shape[0]:
        raise ClusteringError(
            f"k={k} clusters cannot cover {counts.shape[0]} span groups (at least one each); "
            "raise stages.fet.cluster.k or set stages.fet.cluster.within_types=false"
        )
    if k > counts.sum():
        raise TooFewSpansError(int(counts.sum()), k)
    shares = np.ones(counts.shape[0], dtype=np.int64)
    for _ in range(k - counts.shape[0]):
        quotients = np.where(shares < counts, counts / (shares + 1), -1.0)
        shares[int(np.argmax(quotients))] += 1
    return shares


def _kmeans(y: np.ndarray, k: int, cfg: ClusterConfig, seed: int, device: int | None):
    """One FAISS k-means of `y` into `k`: (centroids [k, d], objective, iterations run)."""
    import faiss

    n, d = y.shape
    kmeans = faiss.Kmeans(
        d,
        int(k),
        niter=int(cfg.niter),
        nredo=int(cfg.nredo),
        seed=seed,
        verbose=bool(cfg.verbose),
        # explicit: every span of the sample trains (FAISS would keep 256 x k of them, silently)
        max_points_per_centroid=int(cfg.max_points_per_centroid or max(n // k + 1, 256)),
        gpu=False,
    )
    resources = None
    if device is not None:
        resources = faiss.StandardGpuResources()
        kmeans.index = faiss.index_cpu_to_gpu(resources, device, faiss.IndexFlatL2(d))
    objective = float(kmeans.train(y))
    return np.asarray(kmeans.centroids, dtype=np.float32), objective, len(kmeans.iteration_stats or ())


def fit_clusters(sample, sample_ids, cfg: ClusterConfig, epoch: int = 0, groups=None) -> ClusterModel:
    """Train the PCA and k-means on the training sample (rows sorted by span id), seeds from (seed, epoch).

    `sample`: an array, or anything sliced by rows (`SampleRows`). Memory: the PCA reads its own
    rows (at most `pca_max_train`, full width); k-means then reads the sample `assign_chunk` rows at a
    time into the PCA space, so the sample is never held at full width (pca_dim, not d, per span).

    `groups` (a non-negative group code per sample row, e.g. the coarse type): one PCA over the whole
    sample, so every centroid lives in one space, then a k-means per group into its `split_k` share of
    `cfg.k` (each with the clustering's seed: one group is the plain k-means); the centroids are concatenated group by group in
    ascending code order (`ClusterModel.centroid_groups`)."""
    import faiss

    cfg.validate()
    if len(sample.shape) != 2:
        raise ValueError(f"features must be [spans, dim], got shape {tuple(sample.shape)}")
    n, d_in = (int(v) for v in sample.shape)
    check_sample(n, cfg, d_in)
    started = time.perf_counter()
    seed = derive_seed(cfg.seed, epoch)
    step = int(cfg.assign_chunk)
    with _FaissThreads(cfg):
        device = _pick_gpu(cfg)
        pca_bytes = None
        if cfg.pca_dim:
            d_out = min(cfg.pca_dim, d_in)
            threshold = sample_threshold(id_priorities(sample_ids, seed), cfg.pca_max_train)
            if threshold is None:
                pca_rows = _rows(sample, slice(None))
            else:  # the spans of the smallest priorities, still in id order
                pca_rows = _rows(sample, np.flatnonzero(id_priorities(sample_ids, seed) <= threshold))
            pca = faiss.PCAMatrix(d_in, d_out, float(cfg.eigen_power))
            pca.max_points_per_d = max(1, -(-pca_rows.shape[0] // d_in))  # never subsample inside FAISS
            pca.train(pca_rows)
            del pca_rows
            pca_bytes = (
                faiss.vector_to_array(pca.A).reshape(d_out, d_in).astype(np.float32),
                faiss.vector_to_array(pca.b).astype(np.float32),
            )
        model = ClusterModel(
            np.zeros((0, 0), np.float32),
            pca_bytes,
            bool(cfg.normalize),
            seed,
            int(epoch),
            0.0,
            0,
            n,
            0.0,
            device is not None,
        )
        d = min(cfg.pca_dim, d_in) if cfg.pca_dim else d_in
        y = np.empty((n, d), dtype=np.float32)
        for start in range(0, n, step):
            y[start : start + step] = model.transform(_rows(sample, slice(start, start + step)))
        if groups is None:
            model.centroids, model.objective, model.iterations = _kmeans(y, cfg.k, cfg, seed, device)
        else:
            groups = np.asarray(groups, dtype=np.int64)
            if groups.shape != (n,) or (groups < 0).any():
                raise ValueError(f"groups must hold a non-negative code for each of the {n} sample rows")
            codes, counts = np.unique(groups, return_counts=True)
            shares = split_k(counts, cfg.k)
            parts = [
                _kmeans(y[groups == code], int(share), cfg, seed, device)
                for code, share in zip(codes, shares)
            ]
            model.centroids = np.concatenate([part[0] for part in parts])
            model.objective = float(sum(part[1] for part in parts))
            model.iterations = int(sum(part[2] for part in parts))
            model.centroid_groups = np.repeat(codes, shares)
    model.seconds = time.perf_counter() - started
    return model


def assign_features(
    features, model: ClusterModel, cfg: ClusterConfig, groups=None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of `features` (an array, a memmap, or anything sliced by rows),
    `cfg.assign_chunk` rows at a time: (assignments int64 [N], squared distances float32 [N]).

    A model fitted within groups needs `groups` (each row's group code): a row goes to the nearest
    centroid of its own group; a row of a group the training sample did not hold, to the nearest of all."""
    import faiss

    n = int(features.shape[0])
    assignments = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float32)
    if model.centroid_groups is not None and (groups is None or len(groups) != n):
        raise ValueError("a model fitted within groups assigns each row within its group: pass `groups`")
    with _FaissThreads(cfg):
        device = _pick_gpu(cfg)
        resources = faiss.StandardGpuResources() if device is not None else None

        def index_of(centroids: np.ndarray):
            index = faiss.IndexFlatL2(model.dim)
            if resources is not None:
                index = faiss.index_cpu_to_gpu(resources, device, index)
            index.add(np.ascontiguousarray(centroids))
            return index

        index = index_of(model.centroids)
        within = {}  # group code -> (its index, the global ids of its centroids)
        if model.centroid_groups is not None:
            for code in np.unique(model.centroid_groups):
                ids = np.flatnonzero(model.centroid_groups == code)
                within[int(code)] = (index_of(model.centroids[ids]), ids)
        step = int(cfg.assign_chunk)
        for start in range(0, n, step):
            y = model.transform(_rows(features, slice(start, start + step)))
            if not within:
                dist, labels = index.search(y, 1)
            else:
                block_groups = np.asarray(groups[start : start + step], dtype=np.int64)
                dist, labels = np.empty((y.shape[0], 1), np.float32), np.empty((y.shape[0], 1), np.int64)
                for code in np.unique(block_groups):
                    rows = np.flatnonzero(block_groups == code)
                    group_index, ids = within.get(int(code), (index, None))
                    dist[rows], found = group_index.search(np.ascontiguousarray(y[rows]), 1)
                    labels[rows] = found if ids is None else ids[found]
            assignments[start : start + step] = labels[:, 0]
            distances[start : start + step] = np.maximum(dist[:, 0], 0.0)
    return assignments, distances


def cluster_stats(sizes: np.ndarray, sums: np.ndarray, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(variances, class weights) from the cluster sizes and sums of squared distances."""
    k = sizes.shape[0]
    variances = np.divide(sums, sizes, out=np.zeros(k), where=sizes > 0)
    return variances, _class_weights(sizes, variances, scheme)


def training_rows(span_ids: np.ndarray, cfg: ClusterConfig, epoch: int) -> np.ndarray:
    """Rows of the training sample among `span_ids` (unique), in span id order."""
    priorities = id_priorities(span_ids, derive_seed(cfg.seed, epoch))
    threshold = sample_threshold(priorities, cfg.max_train_spans)
    rows = np.arange(span_ids.shape[0]) if threshold is None else np.flatnonzero(priorities <= threshold)
    return rows[np.argsort(span_ids[rows], kind="stable")]


def cluster_features(
    features, cfg: ClusterConfig, epoch: int = 0, span_ids=None, groups=None
) -> ClusterResult:
    """Cluster span features [N, D] into `cfg.k` pseudo-classes; rows keep their input order.

    `span_ids` (unique; default the row numbers) choose the training sample (`max_train_spans`), so a
    run on several ranks that hold the same spans picks the same one. `groups` (a non-negative code
    per row): k-means within each group (`fit_clusters`), every row assigned within its group. Runs in the calling process
    (FAISS threads and fork do not mix; docs/design.md, "FAISS"), on CPU or the GPU `_pick_gpu`
    chooses. Deterministic on CPU for a given (features, span ids, cfg, epoch) and thread count.
    """
    cfg.validate()
    if not hasattr(features, "shape") or not hasattr(features, "__getitem__"):
        features = np.asarray(features, dtype=np.float32)
    if len(features.shape) != 2:
        raise ValueError(f"features must be [spans, dim], got shape {tuple(features.shape)}")
    n = int(features.shape[0])
    ids = np.arange(n, dtype=np.int64) if span_ids is None else np.asarray(span_ids, dtype=np.int64)
    if ids.shape[0] != n:
        raise ValueError(f"{n} feature rows but {ids.shape[0]} span ids")
    check_sample(min(n, cfg.max_train_spans or n), cfg, int(features.shape[1]))
    started = time.perf_counter()
    rows = training_rows(ids, cfg, epoch)
    if groups is not None:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != (n,):
            raise ValueError(f"{n} feature rows but {groups.shape[0]} group codes")
    model = fit_clusters(
        SampleRows(features, rows), ids[rows], cfg, epoch, None if groups is None else groups[rows]
    )
    assignments, distances = assign_features(features, model, cfg, groups)
    sizes = np.bincount(assignments, minlength=cfg.k).astype(np.int64)
    sums = np.bincount(assignments, weights=distances.astype(np.float64), minlength=cfg.k)
    variances, weights = cluster_stats(sizes, sums, cfg.class_weights)
    return ClusterResult(
        assignments=assignments,
        centroids=model.centroids,
        class_weights=weights,
        sizes=sizes,
        variances=variances.astype(np.float32),
        seconds=time.perf_counter() - started,
        empty=int((sizes == 0).sum()),
        seed=model.seed,
        epoch=int(epoch),
        dim=model.dim,
        objective=model.objective,
        iterations=model.iterations,
        on_gpu=model.on_gpu,
        config=asdict(cfg),
        train_spans=model.train_spans,
        model=model,
    )
