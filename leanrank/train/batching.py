"""Per-epoch batch plans: reproducible from (seed, epoch), so a resumed run sees the same data."""

from __future__ import annotations

import random

from leanrank.core.batching import length_bucketed_batches
from leanrank.train.examples import PairExample


def epoch_batches(
    examples: list[PairExample], batch_size: int, loss: str, seed: int, epoch: int
) -> list[list[int]]:
    """Index batches for one epoch.

    Pointwise losses: length-bucketed shuffled pairs. Listwise (alone or mixed): whole query groups packed
    into batches of about ``batch_size`` pairs (a list is never split across batches).
    """
    epoch_seed = seed * 1_000_003 + epoch
    if "listwise" not in loss:
        lengths = [len(e.query) + len(e.title) for e in examples]
        return length_bucketed_batches(lengths, batch_size, shuffle=True, seed=epoch_seed)
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.group, []).append(i)
    order = list(groups.values())
    random.Random(epoch_seed).shuffle(order)
    batches, current = [], []
    for members in order:
        if current and len(current) + len(members) > batch_size:
            batches.append(current)
            current = []
        current = current + members
    if current:
        batches.append(current)
    return batches
