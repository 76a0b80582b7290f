"""Ranking losses for cross-encoders: pointwise (BCE, MSE), listwise (softmax CE) and their sum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "mse", "listwise", "bce+listwise")


def pointwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE on graded targets in [0, 1] (soft labels): sigmoid(logit) estimates gain / max gain."""
    return F.binary_cross_entropy_with_logits(logits, targets)


def pointwise_mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MSE between sigmoid(logit) and the graded target."""
    return F.mse_loss(torch.sigmoid(logits), targets)


def listwise_softmax(logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy per query list (ListNet top-1): target distribution ∝ exp-free gains.

    Each query's targets are normalised to sum to 1; lists whose targets are all 0 are skipped.
    """
    losses = []
    for g in torch.unique(groups):
        m = groups == g
        t = targets[m]
        if t.sum() <= 0 or m.sum() < 2:
            continue
        losses.append(-(t / t.sum() * F.log_softmax(logits[m], dim=0)).sum())
    if not losses:
        return logits.sum() * 0.0
    return torch.stack(losses).mean()


def compute_loss(name: str, logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if name == "bce":
        return pointwise_bce(logits, targets)
    if name == "mse":
        return pointwise_mse(logits, targets)
    if name == "listwise":
        return listwise_softmax(logits, targets, groups)
    if name == "bce+listwise":  # listwise ranks within a query; BCE keeps scores comparable across queries
        return pointwise_bce(logits, targets) + listwise_softmax(logits, targets, groups)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
