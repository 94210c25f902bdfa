"""Encoder exports: a `save_pretrained` folder plus `manifest.json`, written atomically.

The manifest records the stage, the hash of the config that trained it, the hash of its data manifest,
its metrics and its parent's manifest hash, so a later stage can check what it starts from.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee import __version__
from cofee.models.encoder import load_pretrained
from cofee.utils.errors import InputFileError
from cofee.utils.io import atomic_directory, atomic_write_json, read_json, stable_hash

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
HEAD_WEIGHTS = "span_head.pt"  # the stage's span head, so a later stage can predict with it


def manifest_hash(manifest: dict) -> str:
    """Identity of an export: everything but the wall-clock fields."""
    return stable_hash({k: v for k, v in manifest.items() if k not in ("created", "seconds")})


def export_encoder(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    manifest: dict,
    head: nn.Module | None = None,
) -> dict:
    manifest = {"format": "cofee-encoder", "cofee_version": __version__, "created": time.time(), **manifest}
    if head is not None and hasattr(head, "spec"):
        manifest["head"] = head.spec()
    with atomic_directory(out_dir) as tmp:
        encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if "head" in manifest:
            torch.save(head.state_dict(), tmp / HEAD_WEIGHTS)
        atomic_write_json(tmp / MANIFEST, manifest)
    log.info("exported %s encoder to %s", manifest.get("stage"), out_dir)
    return manifest


def read_export_manifest(folder: str | Path) -> dict:
    """The manifest of an export; `InputFileError` naming the file when it is missing or not one."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise InputFileError(folder, "not a folder (a stage export is outputs/<run>/<stage>/encoder)")
    if not path.is_file():
        raise InputFileError(path, "file not found: not a CoFEE stage export (outputs/<run>/<stage>/encoder)")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != "cofee-encoder":
        raise InputFileError(path, "not a cofee encoder manifest (format is not 'cofee-encoder')")
    if not isinstance(manifest.get("stage"), str):
        raise InputFileError(path, "a cofee encoder manifest without its 'stage'")
    return manifest


def parent_export(folder: str | Path, manifest: dict) -> Path | None:
    """The export a stage started from: its manifest's `parent_path`, which the curriculum records as
    given (relative to the folder it ran in). Read from elsewhere (a study, a notebook, another working
    folder), a relative path is tried against each folder above this export too, so a run folder read
    from any directory finds its parents. None for a first stage, or when the parent is nowhere."""
    given = manifest.get("parent_path")
    if not given:
        return None
    given = Path(given)
    bases = [] if given.is_absolute() else [Path.cwd(), *Path(folder).resolve().parents]
    candidates = [base / given for base in bases] or [given]
    return next((path for path in candidates if (path / MANIFEST).is_file()), None)


def load_exported_encoder(folder: str | Path) -> tuple[PreTrainedModel, dict]:
    """Load an export and report missing or unexpected weights loudly rather than silently.

    A broken export (no or another manifest, `config.json` not JSON, truncated weights) is one
    `InputFileError` naming the file, raised before any weight is read (`check_model_folder`)."""
    manifest = read_export_manifest(folder)
    model, info = load_pretrained(AutoModel, folder, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(kind):
            log.warning(
                "%s: %d %s when loading the encoder: %s", folder, len(info[kind]), kind, info[kind][:5]
            )
    return model, manifest


def load_export_head(folder: str | Path, hidden_size: int):
    """The span head saved with an export (None when the export has none, e.g. an older one)."""
    from cofee.models.heads import build_head

    manifest = read_export_manifest(folder)
    path = Path(folder) / HEAD_WEIGHTS
    if "head" not in manifest or not path.is_file():
        return None
    head = build_head(manifest["head"], hidden_size)
    try:
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, EOFError, OSError) as exc:
        raise InputFileError(path, f"cannot load the span head: {str(exc).splitlines()[0]}") from None
    return head.eval()


def load_start(init_from: str | Path | None, model):
    """(encoder, tokenizer, manifest or None) a stage or a fine-tuning run starts from: a previous
    export when `init_from` is given, else the encoder described by the `model` config."""
    from transformers import AutoTokenizer

    from cofee.models.encoder import load_encoder, load_tokenizer

    if init_from is None:
        tokenizer = load_tokenizer(model)
        return load_encoder(model, vocab_size=len(tokenizer)), tokenizer, None
    encoder, manifest = load_exported_encoder(init_from)
    return encoder, load_pretrained(AutoTokenizer, init_from), manifest
