"""A linear-chain CRF over word sequences: negative log-likelihood and Viterbi decoding.

Scores: start[y0] + sum_t emit[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_last], over masked words.
Tested against brute-force enumeration of every path.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearChainCRF(nn.Module):
    def __init__(self, num_tags: int):
        super().__init__()
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))

    def path_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Score of the given tag paths. emissions [B, W, L], tags [B, W], mask [B, W] (prefix masks)."""
        mask = mask.to(emissions.dtype)
        batch = torch.arange(emissions.shape[0], device=emissions.device)
        score = self.start[tags[:, 0]] + emissions[batch, 0, tags[:, 0]]
        for t in range(1, emissions.shape[1]):
            step = self.transitions[tags[:, t - 1], tags[:, t]] + emissions[batch, t, tags[:, t]]
            score = score + step * mask[:, t]
        last = tags[batch, mask.sum(1).long() - 1]
        return score + self.end[last]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = self.start + emissions[:, 0]  # [B, L]
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t].unsqueeze(1).bool(), nxt, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def neg_log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean over the batch of -log p(tags | emissions)."""
        emissions = emissions.float()
        return (self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)).mean()

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        emissions = emissions.float()
        score = self.start + emissions[:, 0]
        history = []
        for t in range(1, emissions.shape[1]):
            candidates = score.unsqueeze(2) + self.transitions  # [B, from, to]
            best, index = candidates.max(dim=1)
            nxt = best + emissions[:, t]
            keep = mask[:, t].unsqueeze(1).bool()
            score = torch.where(keep, nxt, score)
            # a masked step keeps each tag pointing at itself, so backtracking passes through it
            identity = torch.arange(self.num_tags, device=emissions.device).expand_as(index)
            history.append(torch.where(keep, index, identity))
        score = score + self.end
        lengths = mask.sum(1).long().tolist()
        paths = []
        for b in range(emissions.shape[0]):
            tag = int(score[b].argmax())
            path = [tag]
            for step in reversed(history):
                tag = int(step[b, tag])
                path.append(tag)
            path.reverse()
            paths.append(path[: lengths[b]])
        return paths
