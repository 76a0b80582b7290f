"""Throughput and latency of a scorer, measured the same way for every backend.

Warm-up first, then several repeats; report median and spread. Timings on a shared CPU are
noisy: compare variants measured side by side in one run, as ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np


def throughput(
    score: Callable[[Sequence[str], Sequence[str]], np.ndarray],
    queries: Sequence[str],
    titles: Sequence[str],
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Pairs per second over ``repeats`` full passes of the given pairs (median, min, max)."""
    for _ in range(warmup):
        score(queries, titles)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        score(queries, titles)
        rates.append(len(queries) / (time.perf_counter() - t0))
    return {"pairs_per_s": statistics.median(rates), "pairs_per_s_min": min(rates),
            "pairs_per_s_max": max(rates), "repeats": repeats, "pairs": len(queries)}


def query_latency(
    score: Callable[[Sequence[str], Sequence[str]], np.ndarray],
    lists: Sequence[tuple[str, Sequence[str]]],
    warmup: int = 2,
) -> dict[str, float]:
    """Per-query latency (ms) of scoring one query's whole candidate list: p50 / p99."""
    for q, titles in lists[:warmup]:
        score([q] * len(titles), titles)
    times = []
    for q, titles in lists:
        t0 = time.perf_counter()
        score([q] * len(titles), titles)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
            "queries_timed": len(times)}
