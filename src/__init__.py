"""CoFEE: coarse-to-fine NER pre-training as a PyTorch Lightning framework."""

import os

# Nothing in this package may reach a model hub, and tokenizers must not fork-warn under
# DataLoader workers or DDP children; children inherit these through the environment.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
