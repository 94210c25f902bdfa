"""A masked-LM objective beside a stage's own, to limit forgetting (docs/design.md, forgetting).

BERT's recipe: word tokens of a copy of the batch are chosen with a probability and replaced by
[MASK] (80%), a random token (10%) or kept (10%); a small head predicts the originals from the
encoder's hidden states. The encoders here are plain `AutoModel`s without an LM head, so the head is
fresh: a transform, a LayerNorm and a decoder tied to the input word embeddings (as BERT's), trained
with the stage and never exported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from cofee.data.alignment import IGNORE_INDEX

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen tokens; the rest keep their id
_MLM_STREAM = 0x4D4C4D  # keeps the masking seeds apart from the step seeds dropout is drawn from


@dataclass(frozen=True)
class MaskingTokens:
    """What masking needs from the tokenizer: its [MASK] id, the ids never masked, the ids to draw from."""

    mask_id: int
    special_ids: tuple[int, ...]
    vocab_size: int

    @classmethod
    def from_tokenizer(cls, tokenizer, embedding_rows: int) -> MaskingTokens:
        """ValueError when the tokenizer has no mask token (a causal-LM tokenizer)."""
        if tokenizer.mask_token_id is None:
            raise ValueError(f"the tokenizer {type(tokenizer).__name__} has no mask token")
        return cls(
            int(tokenizer.mask_token_id),
            tuple(sorted(set(tokenizer.all_special_ids))),
            min(len(tokenizer), int(embedding_rows)),
        )


def masking_generator(device: torch.device | str, *keys: int) -> torch.Generator:
    """A generator of its own for one step's masks, seeded from `keys` (the step's torch seed, epoch,
    batch, rank): a resumed run draws the same masks, and masking takes nothing from the global stream
    that dropout draws from."""
    seed = int(np.random.SeedSequence([_MLM_STREAM, *(int(k) for k in keys)]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokens: MaskingTokens,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked copy of `input_ids`, targets): each attended, non-special token is chosen with
    `probability`; targets hold the original id where chosen and IGNORE_INDEX elsewhere."""
    device, shape = input_ids.device, input_ids.shape
    special = torch.tensor(tokens.special_ids, dtype=input_ids.dtype, device=device)
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special)
    chosen = candidates & (torch.rand(shape, generator=generator, device=device) < probability)
    how = torch.rand(shape, generator=generator, device=device)
    random_ids = torch.randint(tokens.vocab_size, shape, generator=generator, device=device)
    masked = torch.where(chosen & (how < MASK_SHARE), tokens.mask_id, input_ids)
    swapped = chosen & (how >= MASK_SHARE) & (how < MASK_SHARE + RANDOM_SHARE)
    masked = torch.where(swapped, random_ids, masked)
    return masked, torch.where(chosen, input_ids, IGNORE_INDEX)


class MaskedLMHead(nn.Module):
    """BERT's LM prediction head. The decoder's weight is the encoder's input embedding matrix itself
    (one Parameter: it is trained at the encoder's rate and saved with the encoder); the transform,
    LayerNorm and output bias are this head's own."""

    def __init__(self, embeddings: nn.Embedding, config: PretrainedConfig):
        super().__init__()
        rows, width = embeddings.weight.shape
        self.transform = nn.Linear(config.hidden_size, width)
        act = getattr(config, "hidden_act", "gelu")
        self.activation = ACT2FN[act] if isinstance(act, str) else act
        self.norm = nn.LayerNorm(width, eps=getattr(config, "layer_norm_eps", 1e-12))
        self.decoder = nn.Linear(width, rows, bias=False)
        self.decoder.weight = embeddings.weight  # tied
        self.bias = nn.Parameter(torch.zeros(rows))
        # the encoder's own initialisation, as its pre-training head had
        nn.init.normal_(self.transform.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.transform.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.activation(self.transform(hidden)))) + self.bias

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the chosen positions; the vocabulary is scored there only (scoring
        every position would take batch x length x vocabulary floats). No chosen token: 0, still
        connected to the head's parameters (DDP waits for their gradients)."""
        chosen = targets != IGNORE_INDEX
        logits = self(hidden[chosen])
        total = nn.functional.cross_entropy(logits.float(), targets[chosen], reduction="sum")
        return total / chosen.sum().clamp(min=1)
