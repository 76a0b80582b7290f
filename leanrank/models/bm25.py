"""BM25 lexical recall over a whole catalog (bm25s), with corpus statistics of that catalog.

>>> index = BM25Index.build({"p1": "cordless drill", "p2": "paint brush"})
>>> index.search(["drill"], k=1)[0]
[('p1', ...)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from leanrank.core.errors import require


class BM25Index:
    """Product id → title corpus indexed with bm25s (Lucene BM25, English stopwords)."""

    def __init__(self, ids: list[str], retriever, k1: float, b: float):
        self.ids = ids
        self.retriever = retriever
        self.k1, self.b = k1, b
        self._pos = {pid: i for i, pid in enumerate(ids)}

    @classmethod
    def build(cls, titles: Mapping[str, str], k1: float = 1.2, b: float = 0.75) -> BM25Index:
        bm25s = require("bm25s")
        ids = list(titles)
        tokens = bm25s.tokenize([titles[i] for i in ids], stopwords="en", show_progress=False)
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(tokens, show_progress=False)
        return cls(ids, retriever, k1, b)

    def search(self, queries: Sequence[str], k: int = 100) -> list[list[tuple[str, float]]]:
        """Top-k (product id, score) per query; products with score 0 are left out."""
        bm25s = require("bm25s")
        k = min(k, len(self.ids))
        out = []
        # get_scores + argpartition: ~3x faster per query than retriever.retrieve (its tokenizer and
        # top-k machinery dominate one short query); equal scores are ordered by catalog position
        for tokens in bm25s.tokenize(list(queries), stopwords="en", show_progress=False, return_ids=False):
            if not tokens or k == 0:
                out.append([])
                continue
            scores = self.retriever.get_scores(tokens)
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
            top = top[np.lexsort((top, -scores[top]))]
            out.append([(self.ids[d], float(scores[d])) for d in top if scores[d] > 0])
        return out

    def score(self, query: str, product_ids: Sequence[str]) -> np.ndarray:
        """BM25 score of ``query`` for given products (0 for those it does not match)."""
        bm25s = require("bm25s")
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
        if not tokens:  # only stopwords: nothing matches
            return np.zeros(len(product_ids), dtype=np.float32)
        all_scores = self.retriever.get_scores(tokens)
        return np.array([all_scores[self._pos[p]] for p in product_ids], dtype=np.float32)


class BM25Scorer:
    """Scores (query, title) pairs with the catalog's BM25 statistics (the ``Scorer`` protocol)."""

    def __init__(self, index: BM25Index, titles: Mapping[str, str]):
        self.index = index
        self._title_pos = {}
        for pid in index.ids:
            self._title_pos.setdefault(titles[pid], index._pos[pid])

    def score(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        bm25s = require("bm25s")
        out = np.zeros(len(queries), dtype=np.float32)
        cache: dict[str, np.ndarray] = {}
        for i, (q, t) in enumerate(zip(queries, titles)):
            if q not in cache:
                toks = bm25s.tokenize([q], stopwords="en", show_progress=False, return_ids=False)[0]
                cache[q] = self.index.retriever.get_scores(toks) if toks else np.zeros(len(self.index.ids))
            pos = self._title_pos.get(t)
            out[i] = cache[q][pos] if pos is not None else 0.0
        return out
