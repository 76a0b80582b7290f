"""Ranking and pointwise metrics with explicit conventions. Importing loads only numpy
(torch and ranx are imported inside the functions that need them).

* Ranking: candidates are sorted by descending score with a *stable* sort, so tied scores
  keep their input order (deterministic; differs from sklearn's ``ndcg_score``, which
  averages over ties, and from ranx).
* NDCG uses linear gains ``gain / log2(rank + 1)`` (ranks from 1), as sklearn's
  ``ndcg_score`` and ranx's ``ndcg`` do; the ideal list is the gains sorted descending.
* Undefined values are NaN: NDCG of a query whose gains are all zero, and MRR, recall,
  hit rate and average precision of a query with no relevant item. Aggregates skip NaN
  and report how many queries were used (``QueryMetrics.n_valid``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from leanrank.core.errors import require

if TYPE_CHECKING:  # pragma: no cover
    import torch

NAN = float("nan")
RANKING_METRICS = ("ndcg", "mrr", "recall")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _pair(scores: Iterable[float], other: Iterable, other_name: str) -> tuple[np.ndarray, np.ndarray]:
    s, o = np.asarray(scores, dtype=np.float64), np.asarray(other)
    if s.ndim != 1 or o.ndim != 1:
        raise ValueError(f"scores and {other_name} must be 1-D, got shapes {s.shape} and {o.shape}")
    if s.shape != o.shape:
        raise ValueError(f"length mismatch: {len(s)} scores but {len(o)} {other_name}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, o


def _gains(g: np.ndarray) -> np.ndarray:
    g = g.astype(np.float64)
    if not np.isfinite(g).all() or (g < 0).any():
        raise ValueError("gains must be finite and >= 0")
    return g


def _binary(m: np.ndarray, name: str) -> np.ndarray:
    if m.dtype != bool and not np.isin(m, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or contain only 0/1")
    return m.astype(bool)


def _ranked_relevance(scores, relevant_mask) -> np.ndarray:
    """The relevance mask in ranked order (descending score, ties keep input order)."""
    s, m = _pair(scores, relevant_mask, "relevant_mask")
    return _binary(m, "relevant_mask")[np.argsort(-s, kind="stable")]


def ndcg_at_k(scores: Iterable[float], gains: Iterable[float], k: int) -> float:
    """NDCG@k with linear gains; NaN when all gains are zero.

    >>> round(ndcg_at_k([0.9, 0.8, 0.1], [0, 1, 2], k=3), 4)  # (1/log2(3) + 2/2) / (2 + 1/log2(3))
    0.6199
    """
    s, g = _pair(scores, gains, "gains")
    g, k = _gains(g), _check_k(k)
    discount = 1.0 / np.log2(np.arange(2, min(k, len(g)) + 2))
    ideal = float(np.sort(g)[::-1][:k] @ discount)
    if ideal == 0.0:
        return NAN
    return float(g[np.argsort(-s, kind="stable")][:k] @ discount) / ideal


def mrr_at_k(scores: Iterable[float], relevant_mask: Iterable[bool], k: int) -> float:
    """Reciprocal rank of the first relevant item within the top k (0 if none); NaN if none relevant.

    >>> mrr_at_k([0.9, 0.8, 0.1], [False, True, True], k=10)
    0.5
    """
    ranked, k = _ranked_relevance(scores, relevant_mask), _check_k(k)
    if not ranked.any():
        return NAN
    hits = np.flatnonzero(ranked[:k])
    return 1.0 / float(hits[0] + 1) if hits.size else 0.0


def recall_at_k(scores: Iterable[float], relevant_mask: Iterable[bool], k: int) -> float:
    """Fraction of the relevant items ranked in the top k; NaN if none relevant.

    >>> recall_at_k([0.9, 0.8, 0.1], [False, True, True], k=2)
    0.5
    """
    ranked, k = _ranked_relevance(scores, relevant_mask), _check_k(k)
    n_rel = int(ranked.sum())
    return float(ranked[:k].sum()) / n_rel if n_rel else NAN


def hit_rate_at_k(scores: Iterable[float], relevant_mask: Iterable[bool], k: int) -> float:
    """1.0 if any relevant item is in the top k, else 0.0; NaN if none relevant.

    >>> hit_rate_at_k([0.9, 0.8, 0.1], [False, False, True], k=2)
    0.0
    """
    ranked, k = _ranked_relevance(scores, relevant_mask), _check_k(k)
    return float(ranked[:k].any()) if ranked.any() else NAN


def average_precision(scores: Iterable[float], relevant_mask: Iterable[bool]) -> float:
    """Mean of precision@rank over the ranks of all relevant items; NaN if none relevant.

    >>> average_precision([0.9, 0.8, 0.1], [True, False, True])  # (1/1 + 2/3) / 2
    0.8333333333333333
    """
    ranked = _ranked_relevance(scores, relevant_mask)
    if not ranked.any():
        return NAN
    positions = np.flatnonzero(ranked) + 1.0
    return float(np.mean(np.arange(1, len(positions) + 1) / positions))


def rmse(pred: Iterable[float], target: Iterable[float]) -> float:
    """Root mean squared error.

    >>> rmse([1.0, 2.0], [1.0, 4.0])
    1.4142135623730951
    """
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs target {t.shape}")
    if p.size == 0:
        raise ValueError("rmse of empty arrays")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def auc(scores: Iterable[float], binary_labels: Iterable[int]) -> float:
    """ROC AUC as the Mann-Whitney statistic, ties counted 0.5 (equals sklearn's roc_auc_score).

    >>> auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1])  # pairs: (0.5 vs 0.1, 0.5 vs 0.5 = 0.5, 0.9 x2) / 4
    0.875
    """
    s, y = _pair(scores, binary_labels, "binary_labels")
    y = _binary(y, "binary_labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auc needs at least one positive and one negative label")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # average 1-based rank of each tie group
    rank_sum = mid_rank[inverse][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_ci(
    values: Iterable[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (NaN values skipped), vectorised and seeded.

    >>> lo, hi = bootstrap_ci([0.2, 0.4, 0.6, 0.8]); bool(lo <= 0.5 <= hi)
    True
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one non-NaN value")
    if not 0.0 < alpha < 1.0 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    rng, chunk = np.random.default_rng(seed), max(1, (1 << 22) // v.size)  # <= ~4M indices per draw
    draws = (rng.integers(0, v.size, size=(min(chunk, n_boot - i), v.size)) for i in range(0, n_boot, chunk))
    means = np.concatenate([v[idx].mean(axis=1) for idx in draws])
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


@dataclass
class QueryMetrics:
    """Per-query metric values (``"ndcg@10"`` etc.) and their NaN-skipping means.

    ``n_queries`` counts all queries; ``n_valid[metric]`` the non-NaN ones behind ``mean``.
    """

    per_query: dict[str, dict[str, float]]
    mean: dict[str, float]
    n_queries: int
    n_valid: dict[str, int] = field(default_factory=dict)

    def values(self, metric: str) -> np.ndarray:
        """All per-query values of ``metric`` (NaN included), in query order."""
        if metric not in self.mean:
            raise ValueError(f"unknown metric {metric!r}; have {sorted(self.mean)}")
        return np.array([row[metric] for row in self.per_query.values()], dtype=np.float64)

    def ci(self, metric: str, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
        """Bootstrap CI (over queries) of the mean of ``metric``."""
        return bootstrap_ci(self.values(metric), n_boot=n_boot, alpha=alpha, seed=seed)


def evaluate_queries(
    per_query: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ks: Sequence[int] = (10,),
    relevant_min_gain: float = 1.0,
) -> QueryMetrics:
    """ndcg@k, mrr@k and recall@k per query; items with ``gain >= relevant_min_gain`` are relevant.

    >>> m = evaluate_queries({"q": (np.array([0.9, 0.1]), np.array([0.0, 2.0]))}, ks=(1,))
    >>> m.mean["mrr@1"], m.mean["recall@1"], m.n_queries
    (0.0, 0.0, 1)
    """
    if not per_query:
        raise ValueError("evaluate_queries needs at least one query")
    ks = [_check_k(k) for k in ks]
    if not ks or not relevant_min_gain > 0:
        raise ValueError(f"need at least one k and relevant_min_gain > 0, got {ks}, {relevant_min_gain}")
    rows: dict[str, dict[str, float]] = {}
    for qid, (scores, gains) in per_query.items():
        relevant = np.asarray(gains, dtype=np.float64) >= relevant_min_gain
        row: dict[str, float] = {}
        for k in ks:
            row[f"ndcg@{k}"] = ndcg_at_k(scores, gains, k)
            row[f"mrr@{k}"] = mrr_at_k(scores, relevant, k)
            row[f"recall@{k}"] = recall_at_k(scores, relevant, k)
        rows[qid] = row
    names = [f"{m}@{k}" for k in ks for m in RANKING_METRICS]
    mean, n_valid = {}, {}
    for name in names:
        v = np.array([row[name] for row in rows.values()])
        v = v[~np.isnan(v)]
        mean[name], n_valid[name] = (float(v.mean()) if v.size else NAN), int(v.size)
    return QueryMetrics(per_query=rows, mean=mean, n_queries=len(rows), n_valid=n_valid)


def paired_test(a: QueryMetrics, b: QueryMetrics, metric: str) -> dict[str, float]:
    """Two-sided paired Student t-test of ``metric`` over queries (ranx's test, as in ``ranx.compare``).

    Queries where either system is NaN are dropped; ``n`` is the number used and
    ``mean_diff`` is mean(a - b). Identical per-query values give ``p_value = 1.0``.
    """
    if set(a.per_query) != set(b.per_query):
        raise ValueError(f"a and b cover different queries ({len(set(a.per_query) ^ set(b.per_query))} differ)")
    b.values(metric)  # validates the metric name for b too
    x, y = a.values(metric), np.array([b.per_query[q][metric] for q in a.per_query], dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 2:
        raise ValueError(f"paired_test needs >= 2 queries with {metric} defined in both, got {x.size}")
    diff = x - y
    if not diff.any():
        p_value = 1.0
    else:
        stats = require("ranx.statistical_tests", "ranx")
        p_value, _ = stats.paired_student_t_test(x, y)
    return {"p_value": float(p_value), "mean_diff": float(diff.mean()), "n": int(x.size)}


def full_ranking_metrics(
    scores: torch.Tensor,
    target: torch.Tensor,
    ks: Sequence[int] = (5, 10, 20),
    exclude: torch.Tensor | None = None,
) -> dict[str, float]:
    """HR@k and NDCG@k of one target item per row, ranked against the full catalog.

    0-based rank = #items scoring strictly higher + #other items tying the target
    (pessimistic ties: the target ranks last among equal scores, so constant scores
    cannot look good). ``exclude`` ([B, n_items] bool, e.g. already-seen items) removes
    items from the ranking; the target itself is never excluded.

    >>> import torch
    >>> full_ranking_metrics(torch.tensor([[0.1, 0.5, 0.5]]), torch.tensor([1]), ks=(1, 2))
    {'hr@1': 0.0, 'ndcg@1': 0.0, 'hr@2': 1.0, 'ndcg@2': 0.6309297535714575}
    """
    torch = require("torch")
    if scores.ndim != 2 or target.shape != scores.shape[:1] or scores.shape[0] == 0:
        raise ValueError(f"need scores [B, n_items] and target [B], got {tuple(scores.shape)}, {tuple(target.shape)}")
    if target.is_floating_point() or ((target < 0) | (target >= scores.shape[1])).any():
        raise ValueError("target must hold integer item indices in [0, n_items)")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    ks = [_check_k(k) for k in ks]
    if exclude is not None and exclude.shape != scores.shape:
        raise ValueError(f"exclude shape {tuple(exclude.shape)} != scores shape {tuple(scores.shape)}")
    idx = target.long().unsqueeze(1)
    keep = torch.ones_like(scores, dtype=torch.bool) if exclude is None else ~exclude.bool()
    keep = keep.scatter(1, idx, True)
    t = scores.gather(1, idx)
    rank = ((scores > t) & keep).sum(1) + ((scores == t) & keep).sum(1) - 1
    out: dict[str, float] = {}
    for k in ks:
        hit = (rank < k).double()
        out[f"hr@{k}"] = hit.mean().item()
        out[f"ndcg@{k}"] = (hit / torch.log2(rank.double() + 2.0)).mean().item()
    return out
