"""Synthetic catalog: deterministic, valid, noisy enough that lexical overlap is not the answer."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import numpy as np
import pytest

from leanrank.core.errors import LeanrankError
from leanrank.data.search import HOMEDEPOT_LABELS
from leanrank.data.synthetic import CATEGORIES, RELEVANT_SCORE, SyntheticConfig, make_catalog
from leanrank.eval.baselines import RandomScorer
from leanrank.eval.protocol import build_rerank_tasks, evaluate_rerank, score_tasks
from leanrank.models.bm25 import BM25Index, BM25Scorer

SMALL = SyntheticConfig(n_products=300, n_queries=60, n_users=40, seed=3)
LABELS = {1.0, 1.33, 1.67, 2.0, 2.33, 2.67, 3.0}


@pytest.fixture(scope="module")
def catalog():
    return make_catalog()


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _ndcg(gains: list[float], k: int = 10) -> float | None:
    def dcg(gs):
        return sum(g / math.log2(i + 2) for i, g in enumerate(gs[:k]))

    ideal = dcg(sorted(gains, reverse=True))
    return dcg(gains) / ideal if ideal > 0 else None


def _snapshot(cat):
    return cat.products, cat.sessions, cat.search.judgments


def test_deterministic_per_seed():
    assert _snapshot(make_catalog(SMALL)) == _snapshot(make_catalog(SMALL))
    other = make_catalog(SyntheticConfig(n_products=300, n_queries=60, n_users=40, seed=4))
    assert other.search.queries() != make_catalog(SMALL).search.queries()
    assert other.sessions != make_catalog(SMALL).sessions


def test_sizes(catalog):
    cfg = SyntheticConfig()
    ds = catalog.search
    assert ds.name == "synthetic" and ds.labels == HOMEDEPOT_LABELS
    assert len(catalog.products) == cfg.n_products == len(ds.titles) == len(ds.descriptions)
    assert len(ds.queries()) == cfg.n_queries
    # every relevant product plus judged_per_query others; small enough for the demo's training epoch
    low, high = cfg.min_relevant_per_query, cfg.max_relevant_per_query
    assert all(low + cfg.judged_per_query <= len(js) <= high + cfg.judged_per_query
               for js in ds.by_query().values())
    assert len(ds.judgments) <= 12_000
    assert len(ds.split()["test"].queries()) >= 60
    assert len(catalog.sessions) == cfg.n_users
    ids = [p["id"] for p in catalog.products]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"P\d{6}", i) for i in ids)
    assert {p["category"] for p in catalog.products} == set(CATEGORIES)
    assert len({p["brand"] for p in catalog.products}) >= 25
    for p in catalog.products:
        assert p["title"] and p["description"] and isinstance(p["attributes"], dict)


@pytest.mark.parametrize("kwargs", [
    {"n_products": 0}, {"n_queries": -1}, {"judged_per_query": 0}, {"n_users": 1.5},
    {"seed": "x"}, {"n_queries": True}, {"n_products": 5}, {"n_products": 40, "judged_per_query": 30},
    {"min_relevant_per_query": 0}, {"min_relevant_per_query": 9, "max_relevant_per_query": 8},
])
def test_config_validation(kwargs):
    with pytest.raises(LeanrankError, match="SyntheticConfig"):
        SyntheticConfig(**kwargs)


def test_labels(catalog):
    ds = catalog.search
    assert {j.label for j in ds.judgments} <= LABELS
    assert all(math.isclose(j.gain, j.label - 1.0) for j in ds.judgments)
    relevant = sum(ds.is_relevant(j) for j in ds.judgments) / len(ds.judgments)
    assert 0.4 < relevant < 0.9  # mostly on-topic, like Home Depot, with real negatives
    per_query = ds.by_query().values()
    assert sum(len({ds.is_relevant(j) for j in js}) == 2 for js in per_query) > 0.8 * len(per_query)


def test_judgments_reference_catalog(catalog):
    ds = catalog.search
    judged = {j.product_id for j in ds.judgments}
    assert judged <= set(ds.titles)
    assert len(set(ds.titles) - judged) > 0  # some catalog products are never judged
    pairs = [(j.query, j.product_id) for j in ds.judgments]
    assert len(set(pairs)) == len(pairs)


def test_split_is_query_level(catalog):
    splits = catalog.search.split()
    queries = {name: set(s.queries()) for name, s in splits.items()}
    assert all(queries.values())
    assert not (queries["train"] & queries["valid"] or queries["train"] & queries["test"]
                or queries["valid"] & queries["test"])
    assert set().union(*queries.values()) == set(catalog.search.queries())


def test_sessions(catalog):
    known = {p["id"]: p for p in catalog.products}
    assert all(5 <= len(s) <= 30 and all(i in known for i in s) for s in catalog.sessions)
    dept = {i: CATEGORIES[p["category"]].dept for i, p in known.items()}
    pairs = [(a, b) for s in catalog.sessions for a, b in zip(s, s[1:], strict=False)]
    same_dept = sum(dept[a] == dept[b] for a, b in pairs) / len(pairs)
    assert same_dept > 0.6  # category affinity and co-purchases make next items predictable
    top = Counter(i for s in catalog.sessions for i in s).most_common(1)[0][1]
    assert top > 5 * sum(map(len, catalog.sessions)) / len(known)  # popular items exist


def test_queries_carry_lexical_noise(catalog):
    ds = catalog.search
    noisy = 0
    for q, js in ds.by_query().items():
        relevant_words = set().union(*(_tokens(ds.titles[j.product_id]) for j in js if ds.is_relevant(j)))
        noisy += bool(relevant_words and _tokens(q) - relevant_words)
    assert noisy / len(ds.queries()) > 0.2


def test_token_overlap_is_informative_but_not_perfect(catalog):
    ds = catalog.search
    rng = random.Random(0)
    overlap, chance = [], []
    for q, js in ds.by_query().items():
        words = _tokens(q)
        ranked = sorted(js, key=lambda j: -len(words & _tokens(ds.titles[j.product_id])))
        score = _ndcg([j.gain for j in ranked])
        if score is None:
            continue
        overlap.append(score)
        gains = [j.gain for j in js]
        shuffled = []
        for _ in range(10):
            rng.shuffle(gains)
            shuffled.append(_ndcg(gains))
        chance.append(sum(shuffled) / len(shuffled))
    mean_overlap, mean_chance = sum(overlap) / len(overlap), sum(chance) / len(chance)
    assert mean_overlap < 0.99
    assert mean_overlap > mean_chance + 0.03


def test_small_catalog_that_cannot_fill_queries_fails_clearly():
    with pytest.raises(LeanrankError, match="distinct queries"):
        make_catalog(SyntheticConfig(n_products=40, n_queries=10, min_relevant_per_query=30,
                                     max_relevant_per_query=40))


def test_oracle_score(catalog):
    q = catalog.search.queries()[0]
    judged = catalog.search.by_query()[q]
    scores = [catalog.oracle_score(q, j.product_id) for j in judged]
    assert all(1.0 <= s <= 3.0 for s in scores) and max(scores) == 3.0  # the seed product matches
    assert set(catalog.intents) == set(catalog.search.queries())
    with pytest.raises(LeanrankError, match="no synthetic intent"):
        catalog.oracle_score("no such query", judged[0].product_id)


def test_top_relevance_levels_are_fully_judged(catalog):
    """No unjudged product outranks a query's min_relevant-th best judged one: the protocol is fair."""
    cfg = SyntheticConfig()
    ids = [p["id"] for p in catalog.products]
    for q, js in catalog.search.split()["test"].by_query().items():
        judged = {j.product_id for j in js}
        relevant = sorted((catalog.oracle_score(q, p) for p in judged), reverse=True)
        assert sum(s >= RELEVANT_SCORE for s in relevant) >= cfg.min_relevant_per_query
        floor = relevant[cfg.min_relevant_per_query - 1]
        assert all(p in judged for p in ids if catalog.oracle_score(q, p) >= floor), q


def test_rerank_protocol_rewards_understanding_over_bm25(catalog):
    """The hidden-intent oracle sets a high ceiling on the rerank protocol; BM25 stays well below it."""
    ds = catalog.search
    test = ds.split()["test"]
    bm25 = BM25Index.build(ds.titles)
    tasks = build_rerank_tasks(test, bm25)
    assert len(tasks) >= 60

    def ndcg(scores):
        return evaluate_rerank(tasks, scores, relevant_min_gain=1.33).full.mean["ndcg@10"]

    oracle = ndcg([np.array([catalog.oracle_score(t.query, p) for p in t.product_ids]) for t in tasks])
    lexical = ndcg(score_tasks(BM25Scorer(bm25, ds.titles), tasks, ds.titles))
    chance = ndcg(score_tasks(RandomScorer(0), tasks, ds.titles))
    assert oracle >= 0.85
    assert oracle - lexical >= 0.2
    assert chance < 0.25 < lexical
