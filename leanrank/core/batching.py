"""Length-bucketed batching: group items of similar length so padding stays small."""

from __future__ import annotations

import random
from collections.abc import Sequence


def length_bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    bucket_factor: int = 50,
) -> list[list[int]]:
    """Split ``range(len(lengths))`` into batches of indices with similar lengths.

    Without shuffle: indices sorted by length, cut into consecutive batches (inference).
    With shuffle: indices shuffled, sorted by length inside windows of
    ``batch_size * bucket_factor``, cut into batches, and the batch order shuffled (training),
    all driven by ``seed`` so a run is reproducible.

    >>> length_bucketed_batches([5, 1, 3, 2], 2)
    [[1, 3], [2, 0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lambda i: lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    window = batch_size * bucket_factor
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def score_in_batches(
    queries: Sequence[str],
    titles: Sequence[str],
    batch_size: int,
    run_batch,
    progress=None,
):
    """The inference loop every backend shares: validate, length-bucket, score each batch with
    ``run_batch(queries, titles) -> 1-D array``, put the scores back in input order.

    ``progress`` is an optional callable advanced with the size of each finished batch.
    """
    import numpy as np

    from leanrank.core.errors import LeanrankError

    if len(queries) != len(titles):
        raise LeanrankError(f"{len(queries)} queries but {len(titles)} titles")
    out = np.empty(len(queries), dtype=np.float32)
    lengths = [len(q) + len(t) for q, t in zip(queries, titles)]
    for idx in length_bucketed_batches(lengths, batch_size):
        out[idx] = run_batch([queries[i] for i in idx], [titles[i] for i in idx])
        if progress is not None:
            progress(len(idx))
    return out
