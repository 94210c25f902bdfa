import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from cofee.cli.entry import check_overrides  # noqa: E402
from cofee.config import RootConfig  # noqa: E402
from cofee.models.encoder import load_encoder, load_tokenizer  # noqa: E402
from tests.support import TINY, write_dump  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(TINY)


@pytest.fixture
def tiny_encoder(tokenizer):
    import torch

    torch.manual_seed(0)
    return load_encoder(TINY, vocab_size=len(tokenizer))


@pytest.fixture
def compose_cfg():
    """Compose the real `pretrain` config with overrides, as the CLI does (a mistake: ConfigError)."""

    def _compose(overrides=()):
        check_overrides(overrides, RootConfig)  # as the CLI does, before Hydra composes
        with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
            return compose(config_name="pretrain", overrides=list(overrides), return_hydra_config=False)

    return _compose


@pytest.fixture
def small_dump(tmp_path):
    return write_dump(tmp_path / "dump.xml")
