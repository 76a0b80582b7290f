"""Compressed item tables for ``SeqRec``: row-wise int8/int4 and low-rank (V×r · r×H), swapped in
for the model's ``ItemEmbeddingTable`` without touching the model (same ``forward(ids)`` and
``full()``). The choice is recorded in the model card, so ``load_seqrec`` rebuilds it.

The two compose: int8/int4 applied to a low-rank table quantizes its V×r factor row-wise (the
r×H projection stays float) — factorize, fine-tune, then store the factor in 8 bits.

>>> from leanrank.models.seqrec import SeqRec, SeqRecConfig
>>> model = SeqRec(SeqRecConfig(n_items=50, hidden=16, heads=2))
>>> report = compress_item_table_(model, ItemTableConfig(kind="lowrank", rank=4))
>>> report["bytes_after"] < report["bytes_before"]
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from leanrank.compress.qmodules import QuantizedEmbedding
from leanrank.core.errors import LeanrankError
from leanrank.models.seqrec import ItemEmbeddingTable, SeqRec

KINDS = ("int8", "int4", "lowrank")
STEP = "item_table"


@dataclass(frozen=True)
class ItemTableConfig:
    kind: str = "int8"           # int8 | int4 (row-wise affine) | lowrank (truncated SVD)
    rank: int | None = None      # lowrank: the inner width r (must be < hidden)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LeanrankError(f"item table kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "lowrank" and (self.rank is None or self.rank < 1):
            raise LeanrankError("a lowrank item table needs rank >= 1")
        if self.kind != "lowrank" and self.rank is not None:
            raise LeanrankError(f"rank only applies to kind='lowrank', not {self.kind!r}")


class QuantizedItemTable(nn.Module):
    """Row-wise int8/int4 item table (frozen); rows are dequantized on lookup."""

    def __init__(self, rows: int, dim: int, bits: int):
        super().__init__()
        self.q = QuantizedEmbedding(rows, dim, bits=bits, padding_idx=0)

    @classmethod
    def from_table(cls, table: ItemEmbeddingTable, bits: int) -> QuantizedItemTable:
        w = table.full().detach()
        new = cls(w.shape[0], w.shape[1], bits)
        new.q = QuantizedEmbedding.from_float(nn.Embedding.from_pretrained(w, padding_idx=0), bits=bits)
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.q.rows(ids) * (ids > 0).unsqueeze(-1)

    def full(self) -> torch.Tensor:
        w = self.q.weight
        return torch.cat([torch.zeros_like(w[:1]), w[1:]])


class LowRankItemTable(nn.Module):
    """``rows × r`` table times an ``r × hidden`` projection (trainable), initialised by truncated SVD."""

    def __init__(self, rows: int, dim: int, rank: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(rows, rank))
        self.project = nn.Parameter(torch.zeros(rank, dim))

    @classmethod
    def from_table(cls, table: ItemEmbeddingTable, rank: int) -> LowRankItemTable:
        w = table.full().detach().float()
        if rank >= w.shape[1]:
            raise LeanrankError(f"rank {rank} must be below the table width {w.shape[1]} to save anything")
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        new = cls(w.shape[0], w.shape[1], rank)
        with torch.no_grad():
            new.table.copy_(u[:, :rank] * s[:rank])
            new.table[0].zero_()
            new.project.copy_(vh[:rank])
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.table, padding_idx=0) @ self.project

    def full(self) -> torch.Tensor:
        return self.table @ self.project


class QuantizedLowRankItemTable(nn.Module):
    """A low-rank table whose ``rows × r`` factor is row-wise int8/int4 (frozen); float projection."""

    def __init__(self, rows: int, dim: int, rank: int, bits: int):
        super().__init__()
        self.q = QuantizedEmbedding(rows, rank, bits=bits, padding_idx=0)
        self.register_buffer("project", torch.zeros(rank, dim))

    @classmethod
    def from_lowrank(cls, table: LowRankItemTable, bits: int) -> QuantizedLowRankItemTable:
        rows, rank = table.table.shape
        new = cls(rows, table.project.shape[1], rank, bits)
        new.q = QuantizedEmbedding.from_float(nn.Embedding.from_pretrained(table.table.detach().float(), padding_idx=0),
                                              bits=bits)
        new.project = table.project.detach().float().clone()
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.q.rows(ids) @ self.project) * (ids > 0).unsqueeze(-1)

    def full(self) -> torch.Tensor:
        w = self.q.weight @ self.project
        return torch.cat([torch.zeros_like(w[:1]), w[1:]])


def nbytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module``."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def compress_item_table_(model: SeqRec, config: ItemTableConfig) -> dict:
    """Replace ``model.items`` in place; returns a report (bytes before/after, kind) and records the
    step in ``model.card`` so ``load_seqrec`` can rebuild the model."""
    factor = isinstance(model.items, LowRankItemTable) and config.kind != "lowrank"
    if not isinstance(model.items, ItemEmbeddingTable) and not factor:
        raise LeanrankError(f"the item table is already compressed ({type(model.items).__name__})")
    before = nbytes(model.items)
    bits = 8 if config.kind == "int8" else 4
    if factor:
        new = QuantizedLowRankItemTable.from_lowrank(model.items, bits)
    elif config.kind == "lowrank":
        new = LowRankItemTable.from_table(model.items, config.rank)
    else:
        new = QuantizedItemTable.from_table(model.items, bits)
    model.items = new.to(next(model.parameters()).device)
    report = {"kind": config.kind, "rank": config.rank, "bytes_before": before, "bytes_after": nbytes(new)}
    model.card.add_step(STEP, config=asdict(config), **{k: report[k] for k in ("bytes_before", "bytes_after")})
    return report


def load_seqrec(directory: str | Path, device: str = "cpu") -> SeqRec:
    """``SeqRec.load`` that also rebuilds a compressed item table recorded in the model card."""
    model = SeqRec.load_config(directory)
    rows, dim = model.items.weight.shape
    for step in (s for s in model.card.steps if s.get("step") == STEP):    # in the order they were applied
        config = ItemTableConfig(**step["config"])
        bits = 8 if config.kind == "int8" else 4
        if config.kind == "lowrank":
            model.items = LowRankItemTable(rows, dim, config.rank)
        elif isinstance(model.items, LowRankItemTable):
            model.items = QuantizedLowRankItemTable(rows, dim, model.items.table.shape[1], bits)
        else:
            model.items = QuantizedItemTable(rows, dim, bits)
    return model.load_weights(directory).to(device)
