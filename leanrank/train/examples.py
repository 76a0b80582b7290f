"""Training examples for a cross-encoder: judged pairs plus sampled catalog negatives.

Without catalog negatives a reranker never learns to reject what the recall stage brings in,
so each training query also gets unjudged products from the BM25 top list (hard negatives) and
uniformly from the catalog (easy negatives), with target 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from leanrank.data.search import SearchDataset


@dataclass(frozen=True)
class PairExample:
    query: str
    title: str
    target: float   # in [0, 1]: gain / max gain for judged pairs, 0 for sampled negatives
    group: int      # query index, for listwise losses


def build_examples(
    ds: SearchDataset,
    bm25=None,
    bm25_negatives: int = 3,
    random_negatives: int = 1,
    bm25_depth: int = 50,
    seed: int = 0,
) -> list[PairExample]:
    """Pairs grouped by query; negatives drawn with a seeded RNG (deterministic)."""
    rng = random.Random(seed)
    groups = ds.by_query()
    queries = list(groups)
    max_gain = ds.labels.label_max - ds.labels.label_min
    hits = bm25.search(queries, k=bm25_depth) if bm25 is not None and bm25_negatives else None
    catalog = list(ds.titles)
    examples: list[PairExample] = []
    for gi, q in enumerate(queries):
        judged = {j.product_id for j in groups[q]}
        for j in groups[q]:
            examples.append(PairExample(q, ds.titles[j.product_id], j.gain / max_gain, gi))
        negatives: list[str] = []
        if hits is not None:
            pool = [pid for pid, _ in hits[gi] if pid not in judged]
            negatives += rng.sample(pool, min(bm25_negatives, len(pool)))
        n_hard, taken = len(negatives), judged | set(negatives)
        for _ in range(random_negatives * 20):  # bounded: a tiny catalog may run out
            if len(negatives) - n_hard >= random_negatives:
                break
            pid = rng.choice(catalog)
            if pid not in taken:
                negatives.append(pid)
                taken.add(pid)
        examples.extend(PairExample(q, ds.titles[pid], 0.0, gi) for pid in negatives)
    return examples
