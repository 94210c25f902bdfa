"""`make gpu-check`: what a GPU owner measures in a few minutes before a large run.

(a) Throughput: real (non-pad) tokens per second of the ESI stage (`ESIModule`) trained through a
    Lightning Trainer in bf16-mixed, against a hand-written PyTorch loop (forward and loss under bf16
    autocast, backward, clipping, AdamW) on the same encoder and the same batches; the mean of
    3 runs of each after an untimed one, alternating which goes first, both timed from the end of their
    warm-up steps to their last step with one GPU wait at each end; ratio = Lightning / plain (medians),
    target >= 0.9.
    The Lightning figure (batch `--batch-size`, default the stages' 16) is the per-GPU throughput
    that the epoch-time projection in docs/scaling.md assumes.
(b) DDP on 2 GPUs equals 1 GPU: the same module trained `DDP_STEPS` optimizer steps under Lightning's
    DDP strategy on 2 devices (rank r gets the half-batches r, r+2, ...; started by spawning, the
    `ddp` strategy's other launcher) and on 1 device with `accumulate_grad_batches=2` over the same
    half-batches in order, which averages the same two gradients per step. Dropout is off, so the two
    must end with the same weights up to reduction order; the figure is the L2 distance of the final
    weights relative to the L2 size of the update (target: at most the tolerance). As a control, a run
    on rank 0's half-batches alone (what a broken gradient all-reduce would train) is as far from the
    reference as the check must be able to tell apart. Skipped, with the reason, on fewer than 2 GPUs.
(c) FAISS k-means on the GPU: `fit_clusters` (PCA and k-means, FET's code path) on synthetic span
    vectors with `use_gpu=true` against `use_gpu=false` (iterations per second, target >= 1); with a
    CPU-only FAISS build (faiss-cpu has no GPU code), the CPU k-means is timed and the reason stated.

Without a CUDA GPU it prints one line and exits 0, measuring nothing. `--device cpu` runs the same
code on the CPU with a tiny random encoder, few steps, DDP on 2 CPU processes (gloo) and CPU k-means:
a check of the script, written to benchmarks/work/, never to benchmarks/results/.

Run: python -m benchmarks.gpu_check                 (writes benchmarks/results/gpu_check.json)
     python -m benchmarks.gpu_check --device cpu    (the dry path: benchmarks/work/gpu_check_cpu.json)
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from benchmarks.bench_curriculum_gpu import StageThroughput
from benchmarks.bench_esi import adamw
from benchmarks.common import RESULTS, WORK, figure
from cofee.config import AnchorBuildConfig, EncoderConfig, StageConfig, TrainerConfig, stage_optim
from cofee.utils.io import atomic_write_json

NAME = "gpu_check"
THROUGHPUT_TARGET = 0.9
KMEANS_TARGET = 1.0
TINY = {  # the tests' tiny random BERT (conf/model/tiny.yaml), for the dry path
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 256,
}


@dataclass
class Plan:
    """How much each part runs: the GPU check, or the CPU dry path of the same code."""

    device: str  # cuda | cpu
    encoder: EncoderConfig
    precision: str  # Lightning's name; the plain loop autocasts to the same dtype
    steps: int  # timed optimizer steps per throughput run
    rounds: int  # throughput runs of each variant, alternating which goes first
    warmup: int  # steps left out of the timing
    batch_size: int
    ddp_steps: int
    ddp_tolerance: float  # relative weight distance allowed between 2-device DDP and 1 device
    kmeans_spans: int
    kmeans_dim: int
    kmeans_k: int
    kmeans_niter: int


def gpu_plan(model: str | None, batch_size: int) -> Plan:
    bf16 = torch.cuda.is_bf16_supported()
    return Plan(
        device="cuda",
        encoder=EncoderConfig(name_or_path=model) if model else EncoderConfig(),
        precision="bf16-mixed" if bf16 else "16-mixed",
        steps=60,
        rounds=3,
        warmup=10,
        batch_size=batch_size,
        ddp_steps=8,
        ddp_tolerance=0.05,  # bf16 activations; embedding gradients use atomic adds on the GPU
        kmeans_spans=200_000,  # stages.fet.cluster.max_train_spans: the most a clustering trains on
        kmeans_dim=384,
        kmeans_k=1000,
        kmeans_niter=20,
    )


def cpu_plan(batch_size: int) -> Plan:
    return Plan(
        device="cpu",
        encoder=EncoderConfig(name_or_path=None, tokenizer="packaged:minilm", tiny=dict(TINY)),
        precision="32-true",
        steps=3,
        rounds=1,
        warmup=1,
        batch_size=batch_size,
        ddp_steps=3,
        ddp_tolerance=1e-3,  # float32 on the CPU: only the order of the gradient sums differs
        kmeans_spans=4_000,
        kmeans_dim=32,
        kmeans_k=20,
        kmeans_niter=10,
    )


# ---------------------------------------------------------------- data and module
def anchor_batches(tokenizer, label2id: dict, n_batches: int, batch_size: int) -> list[dict]:
    """Length-bucketed batches of the gensim sample's anchor corpus (built into benchmarks/work)."""
    from cofee.data.alignment import encode_sentences
    from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path, iter_corpus
    from cofee.data_modules.batching import LengthBucketBatchSampler, WindowCollator
    from cofee.stages.esi import ENTITY_TYPE

    corpus = WORK / "anchors"
    build_anchor_corpus(default_dump_path(), corpus, AnchorBuildConfig(), num_workers=1, progress=False)
    records = [r for _, r in zip(range(max(400, n_batches * batch_size * 2)), iter_corpus(corpus))]
    spans = [[(s, e, ENTITY_TYPE) for s, e, *_ in r["spans"]] for r in records]
    max_length = 128  # data.anchors.max_length
    windows = encode_sentences(tokenizer, [r["text"] for r in records], spans, "BIO", label2id, max_length)
    sampler = LengthBucketBatchSampler([len(w) for w in windows], batch_size, seed=0)
    collate = WindowCollator(tokenizer.pad_token_id)
    batches = [collate([windows[i] for i in b]) for _, b in zip(range(n_batches), sampler)]
    if len(batches) < n_batches:
        raise RuntimeError(f"the sample gave {len(batches)} batches of {batch_size}, {n_batches} wanted")
    return batches


def esi_module(plan: Plan, dropout: float | None = None):
    """The ESI stage at its defaults on the plan's encoder; `dropout=0.0` also silences the encoder's."""
    from cofee.models.encoder import load_encoder, load_tokenizer
    from cofee.stages.esi import ESIModule

    torch.manual_seed(0)
    tokenizer = load_tokenizer(plan.encoder)
    encoder = load_encoder(plan.encoder, vocab_size=len(tokenizer))
    stage = StageConfig()
    module = ESIModule(encoder, stage_optim(), stage.scheme, stage.dropout if dropout is None else dropout)
    if dropout == 0.0:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Dropout):
                layer.p = 0.0
    return module, tokenizer


def as_collated(batch: dict) -> dict:
    """The loaders' collate function: the batches are collated already (a module-level function, so
    `ddp_spawn` can pickle it; the default for `batch_size=None` walks every span list)."""
    return batch


def real_tokens(batch: dict) -> int:
    return int(batch["attention_mask"].sum())


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _trainer(plan: Plan, **kwargs) -> pl.Trainer:
    settings = {
        "accelerator": "gpu" if plan.device == "cuda" else "cpu",
        "devices": 1,
        "precision": plan.precision,
        "gradient_clip_val": TrainerConfig().gradient_clip_val,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
    }
    settings.update(kwargs)
    return pl.Trainer(**settings)


# ---------------------------------------------------------------- (a) throughput
def plain_loop(module, batches: list[dict], plan: Plan) -> float:
    """Tokens/s of a hand-written loop: forward and loss under autocast, backward, clip, AdamW."""
    device = torch.device(plan.device)
    module = module.to(device).train()
    optimizer = adamw(module)  # the stages' kernel, so the comparison is of the Trainer alone
    dtype = torch.bfloat16 if plan.precision.startswith("bf16") else torch.float16
    autocast = plan.precision != "32-true"

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    tokens, started = 0, None
    for i, batch in enumerate(batches):
        if i == plan.warmup:
            tokens, started = 0, sync()
        batch = to_device(batch, device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=autocast):
            loss = module.head.loss(module(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        if i >= plan.warmup:
            tokens += real_tokens(batch)
    return tokens / (sync() - started)


def lightning_stage(module, batches: list[dict], plan: Plan) -> float:
    """Tokens/s of the same module through a Lightning Trainer (the stages' own step)."""
    timer = StageThroughput(plan.warmup, sync_each_step=False)  # timed as the plain loop is
    trainer = _trainer(plan, max_steps=len(batches), callbacks=[timer])
    trainer.fit(module, DataLoader(batches, batch_size=None, shuffle=False, collate_fn=as_collated))
    return timer.tokens_per_s


def throughput(plan: Plan) -> tuple[dict, dict]:
    base, tokenizer = esi_module(plan)
    batches = anchor_batches(tokenizer, base.head.label2id, plan.warmup + plan.steps, plan.batch_size)
    order = [("plain", plain_loop), ("lightning", lightning_stage)]
    # An untimed run of each first: the process's first run pays for CUDA context, cuBLAS handles and
    # kernel selection beyond its warm-up steps (on an H200 it ran at a seventh of the later runs' rate).
    cold = {name: run(copy.deepcopy(base), batches, plan) for name, run in order}
    runs = {"plain": [], "lightning": []}
    for n in range(plan.rounds):
        for name, run in order if n % 2 == 0 else order[::-1]:
            runs[name].append(run(copy.deepcopy(base), batches, plan))
    plain, stage = statistics.median(runs["plain"]), statistics.median(runs["lightning"])
    fig = figure(
        "esi_lightning_vs_plain_loop_" + plan.precision.split("-")[0],
        stage,
        "real tokens/s",
        plain,
        THROUGHPUT_TARGET,
        f"{plan.device}, {plan.precision}, batch {plan.batch_size}, {plan.steps} timed steps, median of "
        f"{plan.rounds} after an untimed run of each; ESI through a Lightning Trainer vs a hand-written AdamW loop, same encoder and batches",
    )
    timed = batches[plan.warmup :]
    details = {
        "runs_tokens_per_s": {k: [round(v, 1) for v in vs] for k, vs in runs.items()},
        "untimed_first_runs_tokens_per_s": {k: round(v, 1) for k, v in cold.items()},
        "plain_steps_per_s": round(plain * len(timed) / sum(real_tokens(b) for b in timed), 2),
        "batch_size": plan.batch_size,
        "mean_real_tokens_per_window": round(
            sum(real_tokens(b) for b in timed) / sum(len(b["spans"]) for b in timed), 2
        ),
        "lightning_steps_per_s": round(stage * len(timed) / sum(real_tokens(b) for b in timed), 2),
        "encoder_parameters": sum(p.numel() for p in base.encoder.parameters()),
    }
    return fig, details


# ---------------------------------------------------------------- (b) DDP against one device
class RankShare(torch.utils.data.Sampler):
    """Items r, r + world, ... to rank r (all items without a process group): a fixed, unshuffled
    split, where Lightning's own DistributedSampler would shuffle."""

    def __init__(self, n: int):
        self.n = n

    @staticmethod
    def _place() -> tuple[int, int]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __iter__(self):
        rank, world = self._place()
        return iter(range(rank, self.n, world))

    def __len__(self) -> int:
        rank, world = self._place()
        return len(range(rank, self.n, world))


def _weights(module) -> torch.Tensor:
    return torch.cat([p.detach().float().cpu().flatten() for p in module.parameters()])


def ddp_equivalence(plan: Plan, processes: int, skip_reason: str = "") -> tuple[dict | None, dict]:
    """2-device DDP against 1 device with 2-batch accumulation, from the same weights and batches."""
    if processes < 2:
        return None, {"skipped": True, "reason": skip_reason}
    base, tokenizer = esi_module(plan, dropout=0.0)
    half = max(1, plan.batch_size // 2)
    halves = anchor_batches(tokenizer, base.head.label2id, 2 * plan.ddp_steps, half)
    start = _weights(base)

    def train(batches: list[dict], **kwargs):
        module = copy.deepcopy(base)
        loader = DataLoader(batches, batch_size=None, sampler=RankShare(len(batches)), collate_fn=as_collated)
        _trainer(plan, max_steps=plan.ddp_steps, use_distributed_sampler=False, **kwargs).fit(module, loader)
        return _weights(module)

    started = time.perf_counter()
    # rank r of 2 gets the half-batches r, r + 2, ...; 1 device accumulates them in that order
    ddp = train(halves, devices=2, strategy="ddp_spawn")
    reference = train(halves, accumulate_grad_batches=2)
    rank0_only = train(halves[0::2])
    update = float(torch.linalg.vector_norm(reference - start))
    if update == 0.0:
        raise RuntimeError("the reference run did not change the weights: nothing to compare")
    distance = float(torch.linalg.vector_norm(ddp - reference)) / update
    control = float(torch.linalg.vector_norm(rank0_only - reference)) / update
    fig = figure(
        "ddp_2dev_vs_1dev_weight_distance",
        distance,
        "relative L2 distance",
        plan.ddp_tolerance,
        1.0,
        f"{plan.device}, {plan.precision}, {plan.ddp_steps} steps of 2 x {half} windows: DDP on 2 devices vs "
        f"1 device accumulating 2 half-batches; control (rank 0's batches only): {control:.3g}",
        lower_is_better=True,
    )
    details = {
        "skipped": False,
        "steps": plan.ddp_steps,
        "per_rank_batch": half,
        "relative_distance": distance,
        "control_rank0_only_distance": control,
        "update_norm": update,
        "tolerance": plan.ddp_tolerance,
        "control_tells_apart": control > plan.ddp_tolerance,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return fig, details


# ---------------------------------------------------------------- (c) FAISS k-means
def faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def faiss_missing() -> str:
    """Why FAISS cannot be imported here ('' when it can): the other two parts still run without it."""
    try:
        import faiss  # noqa: F401
    except ImportError as err:
        return f"FAISS is not importable here ({err}): k-means not measured"
    return ""


def synthetic_vectors(n: int, dim: int, k: int):
    """Gaussian blobs around k centres in a 64-dim subspace (as bench_clustering draws them)."""
    import numpy as np

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(dim, min(64, dim))))[0]
    centres = rng.normal(size=(k, basis.shape[1])) @ basis.T
    x = centres[rng.integers(0, k, n)] + rng.normal(scale=0.35, size=(n, dim))
    return x.astype(np.float32), np.arange(n, dtype=np.int64)


def kmeans(plan: Plan) -> tuple[dict | None, dict]:
    missing = faiss_missing()
    if missing:
        return None, {"cpu": None, "gpu": None, "reason": missing}
    import faiss

    from cofee.clustering.kmeans import ClusterConfig, fit_clusters

    x, ids = synthetic_vectors(plan.kmeans_spans, plan.kmeans_dim, plan.kmeans_k)

    def timed(use_gpu: bool) -> dict:
        cfg = ClusterConfig(k=plan.kmeans_k, niter=plan.kmeans_niter, use_gpu=use_gpu, max_train_spans=None)
        model = fit_clusters(x, ids, cfg)
        return {
            "seconds": round(model.seconds, 3),
            "iterations": model.iterations,
            "iterations_per_s": model.iterations / model.seconds,
            "on_gpu": bool(model.on_gpu),
        }

    gpus = faiss_gpus()
    setup = {"spans": plan.kmeans_spans, "dim": plan.kmeans_dim, "k": plan.kmeans_k, "pca_dim": min(128, plan.kmeans_dim),
             "niter": plan.kmeans_niter, "faiss": faiss.__version__, "faiss_gpus": gpus}  # fmt: skip
    cpu = timed(False)
    if plan.device != "cuda" or gpus == 0:
        reason = (
            "the CPU dry path times CPU k-means only"
            if plan.device != "cuda"
            else f"this FAISS build ({faiss.__version__}) sees no GPU: faiss-cpu has no GPU code "
            "(install a faiss GPU build, e.g. conda's faiss-gpu, for stages.fet.cluster.use_gpu)"
        )
        return None, {**setup, "cpu": cpu, "gpu": None, "reason": reason}
    gpu = timed(True)
    fig = figure(
        "faiss_kmeans_gpu_vs_cpu",
        gpu["iterations_per_s"],
        "k-means iterations/s",
        cpu["iterations_per_s"],
        KMEANS_TARGET,
        f"fit_clusters (PCA 128 + k-means), {plan.kmeans_spans} synthetic spans x {plan.kmeans_dim}, "
        f"k={plan.kmeans_k}, niter<={plan.kmeans_niter}: use_gpu=true vs false",
    )
    return fig, {**setup, "cpu": cpu, "gpu": gpu}


# ---------------------------------------------------------------- the report
def machine(plan: Plan) -> dict:
    found = {
        "cpus": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "processor": platform.machine(),
    }
    if plan.device == "cuda":
        found.update(
            gpu=torch.cuda.get_device_name(0),
            gpus=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
        )
    return found


def check(plan: Plan, out: Path, ddp_processes: int, ddp_skip_reason: str = "") -> dict:
    started = time.perf_counter()
    figures, parts = [], {}
    for name, part in (
        ("throughput", lambda: throughput(plan)),
        ("ddp", lambda: ddp_equivalence(plan, ddp_processes, ddp_skip_reason)),
        ("kmeans", lambda: kmeans(plan)),
    ):
        fig, parts[name] = part()
        if fig is not None:
            figures.append(fig)
    result = {
        "benchmark": NAME,
        "figures": figures,
        "device": plan.device,
        "dry_run": plan.device != "cuda",
        "precision": plan.precision,
        **parts,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(plan),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(out, result)
    return result


def report(result: dict, out: Path) -> str:
    lines = [
        f"{NAME} on {result['machine'].get('gpu', 'the CPU (dry path, tiny encoder)')}, {result['precision']}:"
    ]
    for fig in result["figures"]:
        lines.append(
            f"  {fig['name']}: {fig['value']:g} {fig['unit']} against {fig['baseline']:g} "
            f"(ratio {fig['ratio']:.2f}, target {'<=' if fig.get('lower_is_better') else '>='} "
            f"{fig['target']:g}: {'met' if fig['met'] else 'NOT met'})"
        )
    for name in ("ddp", "kmeans"):
        reason = result[name].get("reason")
        if reason:
            lines.append(f"  {name}: {reason}")
    if result["kmeans"].get("cpu") is not None and result["kmeans"].get("gpu") is None:
        lines.append(f"  CPU k-means: {result['kmeans']['cpu']['seconds']} s")
    lines.append(f"  {result['seconds']} s in all; written to {out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--model", help="a local Hugging Face encoder folder (default: the packaged MiniLM)")
    parser.add_argument("--batch-size", type=int, default=StageConfig().batch_size)
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP check")
    parser.add_argument("--out", type=Path, help="result file (default: by device, see the docstring)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"{NAME}: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): "
            "nothing measured; `--device cpu` runs the same code on a tiny encoder"
        )
        return 0
    if args.device == "cuda":
        plan = gpu_plan(args.model, args.batch_size)
        processes = min(torch.cuda.device_count(), 2)
        reason = f"needs 2 GPUs, {processes} visible (CUDA_VISIBLE_DEVICES and torch.cuda.device_count())"
        out = args.out or RESULTS / f"{NAME}.json"
    else:
        plan = cpu_plan(args.batch_size)
        processes, reason = 2, ""
        out = args.out or WORK / f"{NAME}_cpu.json"
    if args.no_ddp:
        processes, reason = 0, "skipped by --no-ddp"
    result = check(plan, out, processes, reason)
    print(report(result, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
