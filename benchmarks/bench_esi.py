"""ESI training throughput: the Lightning stage against a plain PyTorch loop over the same encoder and
batches, length-bucketed against fixed-padding batches, and AdamW's fused kernel (the stages' default)
against its per-parameter loop (real, non-pad tokens per second; the optimiser step alone in seconds).

Run: python -m benchmarks.bench_esi   (writes benchmarks/results/esi_training.json)
"""

from __future__ import annotations

import copy
import statistics
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from benchmarks.common import WORK, figure, write_results
from cofee.config import AnchorBuildConfig, EncoderConfig, OptimConfig
from cofee.data.alignment import encode_sentences
from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path, iter_corpus
from cofee.data_modules.batching import LengthBucketBatchSampler, WindowCollator
from cofee.models.encoder import load_encoder, load_tokenizer
from cofee.stages.base import fused_kernel
from cofee.stages.esi import ENTITY_TYPE, ESIModule

STEPS = 12  # timed steps per trial
WARMUP = 2
ROUNDS = 3  # trials alternate between the variants, so load changes on a shared machine hit all alike
BATCH = 16
MAX_LENGTH = 128


def real_tokens(batch: dict) -> int:
    return int(batch["attention_mask"].sum())


def make_batches(tokenizer, label2id, bucket: bool, pad_to: int | None = None) -> list[dict]:
    corpus = WORK / "anchors"
    build_anchor_corpus(default_dump_path(), corpus, AnchorBuildConfig(), num_workers=1, progress=False)
    records = [r for _, r in zip(range(4000), iter_corpus(corpus))]
    texts = [r["text"] for r in records]
    spans = [[(s, e, ENTITY_TYPE) for s, e, *_ in r["spans"]] for r in records]
    windows = encode_sentences(tokenizer, texts, spans, "BIO", label2id, MAX_LENGTH)
    sampler = LengthBucketBatchSampler([len(w) for w in windows], BATCH, seed=0, bucket=bucket)
    collate = WindowCollator(tokenizer.pad_token_id, pad_to)
    return [collate([windows[i] for i in b]) for _, b in zip(range(STEPS + WARMUP), sampler)]


def adamw(module: torch.nn.Module, fused: bool = True) -> torch.optim.AdamW:
    """The stages' AdamW kernel (fused where the parameters allow it), or the per-parameter loop."""
    params = list(module.parameters())
    return torch.optim.AdamW(params, lr=1e-5, fused=fused and fused_kernel(params))


def plain_loop(module: ESIModule, batches: list[dict], fused: bool = True) -> float:
    """Tokens/s of a hand-written loop: forward, loss, backward, clip, AdamW step, schedule-free."""
    module.train()
    optimizer = adamw(module, fused)
    tokens, started = 0, None
    for i, batch in enumerate(batches):
        if i == WARMUP:
            tokens, started = 0, time.perf_counter()
        loss = module.head.loss(module(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        tokens += real_tokens(batch)
    return tokens / (time.perf_counter() - started)


class _Timer(pl.Callback):
    def __init__(self):
        self.tokens, self.started, self.elapsed = 0, None, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= WARMUP:
            self.tokens += real_tokens(batch)
            self.elapsed = time.perf_counter() - self.started


def lightning_stage(module: ESIModule, batches: list[dict]) -> float:
    timer = _Timer()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(batches, batch_size=None, shuffle=False))
    return timer.tokens / timer.elapsed


def optimizer_step_seconds(module: ESIModule, fused: bool, steps: int = 10) -> float:
    """Seconds per AdamW step over the whole encoder, gradients set once (the kernel alone)."""
    optimizer = adamw(module, fused)
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()  # allocates the moments
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - started) / steps


def run() -> dict:
    torch.manual_seed(0)
    model_cfg = EncoderConfig()
    tokenizer = load_tokenizer(model_cfg)
    base = ESIModule(load_encoder(model_cfg), OptimConfig(lr=1e-5, warmup_ratio=0.0))
    label2id = base.head.label2id
    bucketed = make_batches(tokenizer, label2id, bucket=True)
    fixed = make_batches(tokenizer, label2id, bucket=False, pad_to=MAX_LENGTH)

    trials = {k: [] for k in ("plain", "lightning", "plain_fixed", "plain_loop_adamw", "step", "step_loop")}
    for _ in range(ROUNDS):
        trials["plain"].append(plain_loop(copy.deepcopy(base), bucketed))
        trials["lightning"].append(lightning_stage(copy.deepcopy(base), bucketed))
        trials["plain_fixed"].append(plain_loop(copy.deepcopy(base), fixed))
        trials["plain_loop_adamw"].append(plain_loop(copy.deepcopy(base), bucketed, fused=False))
        trials["step"].append(optimizer_step_seconds(copy.deepcopy(base), fused=True))
        trials["step_loop"].append(optimizer_step_seconds(copy.deepcopy(base), fused=False))
    plain, stage, plain_fixed, plain_loop_adamw, step, step_loop = (
        statistics.median(trials[k]) for k in trials
    )
    figures = [
        figure(
            "esi_lightning_vs_plain_loop",
            stage,
            "real tokens/s",
            plain,
            0.9,
            "same MiniLM encoder and batches; Lightning Trainer vs a hand-written AdamW loop",
        ),
        figure(
            "esi_bucketing_vs_fixed_padding",
            plain,
            "real tokens/s",
            plain_fixed,
            1.0,
            f"length-bucketed dynamic padding vs padding every batch to {MAX_LENGTH}",
        ),
        figure(
            "esi_fused_vs_loop_adamw",
            plain,
            "real tokens/s",
            plain_loop_adamw,
            1.1,
            "whole training steps of the plain loop: AdamW's fused kernel vs its per-parameter loop",
        ),
        figure(
            "optimizer_step",
            step,
            "s per AdamW step, whole MiniLM encoder",
            step_loop,
            0.5,
            "fused kernel vs per-parameter loop, the same gradients",
            lower_is_better=True,
        ),
    ]
    path = write_results(
        "esi_training", figures, steps=STEPS, batch_size=BATCH, threads=torch.get_num_threads()
    )
    return {"path": str(path), "figures": figures}


if __name__ == "__main__":
    for fig in run()["figures"]:
        print(fig)
