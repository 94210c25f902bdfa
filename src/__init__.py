"""CoFEE: coarse-to-fine NER pre-training as a PyTorch Lightning framework."""

import os

# Nothing in this package may reach a model hub, and tokenizers must not fork-warn under
# DataLoader workers or DDP children; children inherit these through the environment.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"

# `${cofee.run_dir:...}` and `${cofee.hydra_subdir:...}` in conf/pretrain.yaml (resume=<run folder>)
from cofee.pipeline.run_folder import register_resolvers  # noqa: E402

register_resolvers()
