"""The rerank protocol: the primary quality number for every comparison in leanrank.

For each query, the candidates are its judged products plus the top BM25 products of the
whole catalog that are not judged, up to ``depth`` (100); gain = label - label_min for judged
products and 0 for the others; NDCG@10 over queries with at least one gain > 0. The same scores
also give NDCG@10 on the judged lists alone (``ndcg@10_judged``) and, for a model that predicts
labels, RMSE on the judged pairs.

Candidates are put in a seeded per-query order before scoring, so the stable tie-breaking of
the metrics never favours judged products.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from leanrank.data.search import SearchDataset
from leanrank.eval.metrics import QueryMetrics, evaluate_queries


class Scorer(Protocol):
    """Anything that scores aligned (query, title) pairs: torch, ORT, BM25, a service."""

    def score(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray: ...


@dataclass
class RerankTask:
    query: str
    product_ids: list[str]
    gains: np.ndarray     # graded gain per candidate (0 for unjudged)
    judged: np.ndarray    # bool per candidate
    labels: np.ndarray    # raw label per candidate (nan for unjudged)


def build_rerank_tasks(
    ds: SearchDataset, bm25, depth: int = 100, max_queries: int | None = None, seed: int = 0
) -> list[RerankTask]:
    """One task per query with at least one gain > 0 (``bm25`` is a BM25Index over the catalog)."""
    groups = {q: js for q, js in ds.by_query().items() if any(j.gain > 0 for j in js)}
    queries = list(groups)
    if max_queries is not None and len(queries) > max_queries:
        queries = random.Random(seed).sample(queries, max_queries)
    hits = bm25.search(queries, k=depth + 16) if queries else []
    tasks = []
    for q, ranked in zip(queries, hits):
        judged = {j.product_id: j for j in groups[q]}
        extra = [pid for pid, _ in ranked if pid not in judged][: max(depth - len(judged), 0)]
        ids = list(judged) + extra
        rng = random.Random(int.from_bytes(hashlib.sha1(f"{seed}:{q}".encode()).digest()[:8], "big"))
        rng.shuffle(ids)
        tasks.append(RerankTask(
            query=q,
            product_ids=ids,
            gains=np.array([judged[p].gain if p in judged else 0.0 for p in ids], dtype=np.float64),
            judged=np.array([p in judged for p in ids]),
            labels=np.array([judged[p].label if p in judged else np.nan for p in ids]),
        ))
    return tasks


def score_tasks(scorer: Scorer, tasks: list[RerankTask], titles: dict[str, str]) -> list[np.ndarray]:
    """Score every candidate of every task in one batched call; split back per task."""
    queries = [t.query for t in tasks for _ in t.product_ids]
    texts = [titles[p] for t in tasks for p in t.product_ids]
    flat = np.asarray(scorer.score(queries, texts), dtype=np.float64)
    out, start = [], 0
    for t in tasks:
        out.append(flat[start : start + len(t.product_ids)])
        start += len(t.product_ids)
    return out


@dataclass
class RerankResult:
    full: QueryMetrics      # judged + BM25 candidates (the primary number)
    judged: QueryMetrics    # judged lists alone
    rmse: float | None
    scores: list[np.ndarray] | None = None   # per task, as scored (for agreement between models)

    def summary(self) -> dict[str, float | None]:
        return {
            "ndcg@10": self.full.mean["ndcg@10"],
            "ndcg@10_judged": self.judged.mean["ndcg@10"],
            "mrr@10": self.full.mean["mrr@10"],
            "rmse": self.rmse,
            "queries": self.full.n_queries,
        }


def evaluate_rerank(
    tasks: list[RerankTask],
    scores: list[np.ndarray],
    relevant_min_gain: float,
    predicted_labels: list[np.ndarray] | None = None,
) -> RerankResult:
    """Metrics from per-task scores; ``predicted_labels`` (label scale) adds RMSE on judged pairs."""
    full = evaluate_queries(
        {t.query: (s, t.gains) for t, s in zip(tasks, scores)}, ks=(10,), relevant_min_gain=relevant_min_gain
    )
    judged = evaluate_queries(
        {t.query: (s[t.judged], t.gains[t.judged]) for t, s in zip(tasks, scores)},
        ks=(10,), relevant_min_gain=relevant_min_gain,
    )
    rmse = None
    if predicted_labels is not None:
        pred = np.concatenate([p[t.judged] for t, p in zip(tasks, predicted_labels)])
        true = np.concatenate([t.labels[t.judged] for t in tasks])
        rmse = float(np.sqrt(np.mean((pred - true) ** 2)))
    return RerankResult(full, judged, rmse, list(scores))


def recall_at_k(ds: SearchDataset, retrieved: dict[str, list[str]], k: int = 100) -> float:
    """Mean Recall@k of a recall stage over the whole catalog (relevant = label ≥ threshold)."""
    values = []
    for q, js in ds.by_query().items():
        relevant = {j.product_id for j in js if ds.is_relevant(j)}
        if relevant and q in retrieved:
            values.append(len(relevant & set(retrieved[q][:k])) / len(relevant))
    return float(np.mean(values)) if values else float("nan")
