"""Training throughput (pairs/s) of one precision, on fixed real batches, after warm-up."""

from __future__ import annotations

import statistics
import time

import torch

from leanrank.models.cross_encoder import CrossEncoder, autocast
from leanrank.train.examples import PairExample
from leanrank.train.losses import compute_loss


def train_throughput(
    model: CrossEncoder, examples: list[PairExample], precision: str, batch_size: int = 32,
    steps: int = 8, warmup: int = 2,
) -> dict[str, float]:
    """Forward + backward + AdamW step on consecutive batches; median pairs/s over ``steps``.

    The model's weights change; pass a copy you do not need.
    """
    model.model.train()
    opt = torch.optim.AdamW(model.model.parameters(), lr=1e-6)
    batches = [examples[i * batch_size:(i + 1) * batch_size] for i in range(warmup + steps)]
    rates = []
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        feats = model.tokenize([e.query for e in batch], [e.title for e in batch])
        targets = torch.tensor([e.target for e in batch], device=model.device)
        with autocast(model.device, precision):
            logits = model(**feats)
        compute_loss("bce", logits, targets, torch.zeros_like(targets)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            rates.append(len(batch) / (time.perf_counter() - t0))
    return {"precision": precision, "pairs_per_s": statistics.median(rates),
            "pairs_per_s_min": min(rates), "pairs_per_s_max": max(rates), "steps": steps,
            "batch_size": batch_size}
