"""Building blocks for restructured models: a rank-r Linear and a factorized embedding table.

``factorize_`` (leanrank.compress.factorize) fills them from an SVD; loaders build empty ones
from the ranks recorded in ``leanrank.json`` and then read the saved tensors.

>>> layer = LowRankLinear(384, 1536, rank=96)        # 384·96 + 96·1536 weights instead of 384·1536
>>> layer(torch.zeros(2, 384)).shape
torch.Size([2, 1536])
"""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """``x → up(down(x))``: ``down`` is in→rank without bias, ``up`` is rank→out with the bias."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class FactorizedEmbedding(nn.Module):
    """A V×E table followed by an E→H projection (ALBERT-style): V·E + E·H numbers instead of V·H."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx = padding_idx
        self.table = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx)
        self.project = nn.Linear(rank, embedding_dim, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.table(ids))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"
