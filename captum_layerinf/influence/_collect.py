"""Collects score chunks over training batches: the full matrix, or a running top-k."""

from __future__ import annotations

import torch
from captum.influence._utils.common import KMostInfluentialResults
from torch import Tensor


class ScoreCollector:
    """Accumulates `Tensor [..., n_test, batch]` chunks along the training axis.

    Args:
        k: None keeps every score; an int keeps only the `k` best per test example.
        proponents: With `k`, keep the largest (True) or the smallest (False) scores.
    """

    def __init__(self, k: int | None, proponents: bool) -> None:
        self.k = k
        self.proponents = proponents
        self.chunks: list[Tensor] = []
        self.best: tuple[Tensor, Tensor] | None = None
        self.offset = 0

    def add(self, scores: Tensor) -> None:
        """Adds the scores of the next `scores.shape[-1]` training examples."""
        n = scores.shape[-1]
        if self.k is None:
            self.chunks.append(scores)
        else:
            idx = torch.arange(self.offset, self.offset + n, device=scores.device)
            idx = idx.expand_as(scores)
            if self.best is not None:
                scores = torch.cat([self.best[0], scores], dim=-1)
                idx = torch.cat([self.best[1], idx], dim=-1)
            top = torch.topk(scores, min(self.k, scores.shape[-1]), dim=-1, largest=self.proponents)
            self.best = (top.values, idx.gather(-1, top.indices))
        self.offset += n

    def result(self) -> Tensor | KMostInfluentialResults:
        """The full score tensor, or Captum's `KMostInfluentialResults(indices, scores)`."""
        if self.k is None:
            return torch.cat(self.chunks, dim=-1)
        if self.offset < self.k:
            raise ValueError(f"k={self.k} exceeds the number of training examples ({self.offset}).")
        assert self.best is not None  # set by the first chunk, and offset >= k > 0
        values, indices = self.best
        return KMostInfluentialResults(indices=indices, influence_scores=values)
