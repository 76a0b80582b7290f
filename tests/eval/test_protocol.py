"""The rerank protocol on a hand-made catalog with a real BM25 index: candidates, gains, order, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanrank.data.search import HOMEDEPOT_LABELS, Judgment, SearchDataset
from leanrank.eval.metrics import ndcg_at_k
from leanrank.eval.protocol import (
    RerankTask,
    build_rerank_tasks,
    evaluate_rerank,
    recall_at_k,
    score_tasks,
)
from leanrank.models.bm25 import BM25Index

TITLES = {
    "p1": "DeWalt 20V cordless power drill kit",
    "p2": "drill bit set 29 piece",
    "p3": "hammer drill heavy duty",
    "p4": "kitchen faucet chrome",
    "p5": "bathroom sink faucet",
    "p6": "garden hose 50 ft",
    "p7": "drill driver combo kit",
    "p8": "paint brush set",
    "p9": "cordless leaf blower",
    "p10": "faucet aerator",
}
REL = HOMEDEPOT_LABELS.relevant_min_label - HOMEDEPOT_LABELS.label_min  # 1.33 on the gain scale


def J(query: str, pid: str, label: float) -> Judgment:
    return Judgment(query, pid, label, HOMEDEPOT_LABELS.gain(label))


JUDGMENTS = [
    J("cordless drill", "p1", 3.0), J("cordless drill", "p2", 2.0), J("cordless drill", "p8", 1.0),
    J("faucet", "p4", 3.0), J("faucet", "p5", 2.33),
    J("garden hose", "p6", 1.0),  # every gain is 0: no task
    J("paint brush", "p8", 2.67), J("paint brush", "p1", 1.0),
]
JUDGED = {q: {j.product_id: j for j in JUDGMENTS if j.query == q} for q in {j.query for j in JUDGMENTS}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ds() -> SearchDataset:
    return SearchDataset("hand", dict(TITLES), list(JUDGMENTS), HOMEDEPOT_LABELS)


@pytest.fixture(scope="module")
def bm25() -> BM25Index:
    return BM25Index.build(TITLES)


def by_query(tasks: list[RerankTask]) -> dict[str, RerankTask]:
    return {t.query: t for t in tasks}


def unjudged_bm25_order(bm25: BM25Index, query: str) -> list[str]:
    return [pid for pid, _ in bm25.search([query], k=len(TITLES))[0] if pid not in JUDGED[query]]


# ------------------------------------------------------------------ candidates


def test_queries_without_positive_gain_are_dropped(ds, bm25):
    tasks = build_rerank_tasks(ds, bm25)
    assert [t.query for t in tasks] == ["cordless drill", "faucet", "paint brush"]
    assert "garden hose" not in by_query(tasks)


def test_candidates_are_judged_plus_top_unjudged_bm25(ds, bm25):
    extras = unjudged_bm25_order(bm25, "cordless drill")
    assert extras[0] == "p9"  # "cordless leaf blower" shares "cordless"
    assert set(extras) == {"p9", "p3", "p7"}  # every other unjudged title has no query word
    for depth in (3, 4, 5, 6, 100):
        task = by_query(build_rerank_tasks(ds, bm25, depth=depth))["cordless drill"]
        n_extra = min(depth - 3, len(extras))
        assert len(task.product_ids) == 3 + n_extra <= depth
        assert set(task.product_ids) == {"p1", "p2", "p8"} | set(extras[:n_extra])


def test_candidates_never_exceed_depth_and_have_no_duplicates(ds, bm25):
    for depth in (1, 2, 3, 4, 5, 8, 100):
        for task in build_rerank_tasks(ds, bm25, depth=depth):
            n_judged = len(JUDGED[task.query])
            assert len(task.product_ids) == len(set(task.product_ids))
            # every judged product is kept, even when there are more of them than ``depth``
            assert set(JUDGED[task.query]) <= set(task.product_ids)
            assert len(task.product_ids) <= max(depth, n_judged)
            if depth >= n_judged:
                assert len(task.product_ids) <= depth


def test_products_bm25_does_not_match_are_not_candidates(ds, bm25):
    task = by_query(build_rerank_tasks(ds, bm25, depth=100))["faucet"]
    assert set(task.product_ids) == {"p4", "p5", "p10"}  # p10 "faucet aerator" is the only extra


def test_gains_labels_and_judged_mask(ds, bm25):
    for task in build_rerank_tasks(ds, bm25, depth=100):
        judged = JUDGED[task.query]
        assert len(task.gains) == len(task.judged) == len(task.labels) == len(task.product_ids)
        for i, pid in enumerate(task.product_ids):
            if pid in judged:
                assert task.judged[i]
                assert task.labels[i] == judged[pid].label
                assert task.gains[i] == pytest.approx(judged[pid].label - 1.0)
            else:
                assert not task.judged[i]
                assert math.isnan(task.labels[i])
                assert task.gains[i] == 0.0
        assert (task.gains > 0).any()
    drill = by_query(build_rerank_tasks(ds, bm25))["cordless drill"]
    assert sorted(drill.gains[drill.judged].tolist()) == [0.0, 1.0, 2.0]


# ------------------------------------------------------------------ order


def test_candidate_order_is_seeded_and_reproducible(ds, bm25):
    a = build_rerank_tasks(ds, bm25, seed=0)
    b = build_rerank_tasks(ds, bm25, seed=0)
    assert [t.product_ids for t in a] == [t.product_ids for t in b]
    orders = {tuple(by_query(build_rerank_tasks(ds, bm25, seed=s))["cordless drill"].product_ids)
              for s in range(8)}
    assert len(orders) > 1  # the seed drives the order


def test_order_of_a_query_does_not_depend_on_the_other_queries(ds, bm25):
    full = by_query(build_rerank_tasks(ds, bm25, seed=3))
    alone = build_rerank_tasks(ds.subset(["faucet"]), bm25, seed=3)
    assert len(alone) == 1 and alone[0].product_ids == full["faucet"].product_ids


def test_judged_products_are_not_put_first(tiny_search):
    ds = tiny_search["train"]
    bm25 = BM25Index.build(ds.titles)
    # tasks with unjudged candidates to mix in (a query can have as many judged products as depth)
    tasks = [t for t in build_rerank_tasks(ds, bm25, depth=50) if not t.judged.all()]
    assert len(tasks) > 20
    prefix = 0
    for t in tasks:
        prefix += bool(t.judged[: int(t.judged.sum())].all())
    assert prefix / len(tasks) < 0.2
    # and judged products land in the top half about as often as chance says
    top_half = np.mean([t.judged[: len(t.judged) // 2].sum() / t.judged.sum() for t in tasks])
    assert 0.3 < top_half < 0.7


def test_max_queries_subsamples_deterministically(tiny_search):
    ds = tiny_search["train"]
    bm25 = BM25Index.build(ds.titles)
    eligible = [t.query for t in build_rerank_tasks(ds, bm25, depth=10)]
    assert len(eligible) > 10
    a = [t.query for t in build_rerank_tasks(ds, bm25, depth=10, max_queries=5, seed=0)]
    b = [t.query for t in build_rerank_tasks(ds, bm25, depth=10, max_queries=5, seed=0)]
    assert a == b and len(a) == 5 == len(set(a)) and set(a) <= set(eligible)
    others = {tuple(t.query for t in build_rerank_tasks(ds, bm25, depth=10, max_queries=5, seed=s))
              for s in range(1, 5)}
    assert any(set(o) != set(a) for o in others)
    everything = build_rerank_tasks(ds, bm25, depth=10, max_queries=len(eligible) + 5)
    assert [t.query for t in everything] == eligible


def test_empty_dataset_gives_no_tasks(ds, bm25):
    assert build_rerank_tasks(ds.subset([]), bm25) == []
    assert build_rerank_tasks(ds.subset(["garden hose"]), bm25) == []


# ------------------------------------------------------------------ scoring and metrics


class LengthScorer:
    """Scores a pair by the title's length; records each call."""

    def __init__(self):
        self.calls: list[tuple[list[str], list[str]]] = []

    def score(self, queries, titles):
        self.calls.append((list(queries), list(titles)))
        return np.array([len(t) for t in titles], dtype=np.float32)


def test_score_tasks_aligns_scores_with_product_ids(ds, bm25):
    tasks = build_rerank_tasks(ds, bm25)
    scorer = LengthScorer()
    scores = score_tasks(scorer, tasks, TITLES)
    assert len(scorer.calls) == 1  # one batched call
    queries, titles = scorer.calls[0]
    assert len(queries) == sum(len(t.product_ids) for t in tasks)
    start = 0
    for task, s in zip(tasks, scores):
        n = len(task.product_ids)
        assert s.dtype == np.float64 and s.shape == (n,)
        assert s.tolist() == [len(TITLES[p]) for p in task.product_ids]
        assert queries[start : start + n] == [task.query] * n
        assert titles[start : start + n] == [TITLES[p] for p in task.product_ids]
        start += n


def test_perfect_scorer_gives_ndcg_one(ds, bm25):
    tasks = build_rerank_tasks(ds, bm25)
    result = evaluate_rerank(tasks, [t.gains.copy() for t in tasks], REL)
    assert result.full.mean["ndcg@10"] == pytest.approx(1.0)
    assert result.judged.mean["ndcg@10"] == pytest.approx(1.0)
    assert result.full.n_queries == 3 and result.rmse is None
    summary = result.summary()
    assert summary["ndcg@10"] == pytest.approx(1.0) and summary["queries"] == 3
    assert summary["mrr@10"] == pytest.approx(1.0)


def test_reversed_scorer_is_worse(ds, bm25):
    tasks = build_rerank_tasks(ds, bm25)
    result = evaluate_rerank(tasks, [-t.gains for t in tasks], REL)
    assert result.full.mean["ndcg@10"] < 0.9
    assert result.judged.mean["ndcg@10"] < 0.9
    for t in tasks:
        assert result.full.per_query[t.query]["ndcg@10"] < 1.0


def test_judged_ndcg_uses_only_judged_candidates(ds, bm25):
    tasks = build_rerank_tasks(ds, bm25)
    # unjudged candidates ranked above everything, judged ones in perfect order among themselves
    scores = [t.gains + 10.0 * ~t.judged for t in tasks]
    result = evaluate_rerank(tasks, scores, REL)
    assert result.judged.mean["ndcg@10"] == pytest.approx(1.0)
    assert result.full.mean["ndcg@10"] < 1.0
    # hand computed for "faucet": candidates p4 (gain 2), p5 (1.33), p10 (unjudged)
    faucet = by_query(tasks)["faucet"]
    pos = {p: i for i, p in enumerate(faucet.product_ids)}
    s = np.zeros(3)
    s[pos["p10"]], s[pos["p5"]], s[pos["p4"]] = 3.0, 2.0, 1.0   # p10 > p5 > p4
    result = evaluate_rerank([faucet], [s], REL)
    g5 = 2.33 - 1.0
    ideal = 2.0 + g5 / math.log2(3)
    assert result.full.mean["ndcg@10"] == pytest.approx((g5 / math.log2(3) + 2.0 / 2.0) / ideal)
    assert result.judged.mean["ndcg@10"] == pytest.approx((g5 + 2.0 / math.log2(3)) / ideal)
    assert result.full.mean["mrr@10"] == pytest.approx(0.5)  # p5 (label 2.33) is relevant, at rank 2


def test_rmse_on_judged_pairs_only(ds, bm25):
    tasks = build_rerank_tasks(ds, bm25)
    offsets = [0.5, -0.25, 1.0]
    preds, errors = [], []
    for t, off in zip(tasks, offsets):
        p = np.where(t.judged, t.labels + off, 1e6)   # unjudged predictions must be ignored
        preds.append(p)
        errors += [off] * int(t.judged.sum())
    result = evaluate_rerank(tasks, [t.gains for t in tasks], REL, predicted_labels=preds)
    assert len(errors) == 7
    assert result.rmse == pytest.approx(math.sqrt(np.mean(np.square(errors))))
    assert result.summary()["rmse"] == result.rmse
    exact = evaluate_rerank(tasks, [t.gains for t in tasks], REL,
                            predicted_labels=[np.nan_to_num(t.labels) for t in tasks])
    assert exact.rmse == 0.0


def test_full_ndcg_matches_metric_on_each_task(ds, bm25):
    tasks = build_rerank_tasks(ds, bm25)
    scores = score_tasks(LengthScorer(), tasks, TITLES)
    result = evaluate_rerank(tasks, scores, REL)
    for t, s in zip(tasks, scores):
        assert result.full.per_query[t.query]["ndcg@10"] == pytest.approx(ndcg_at_k(s, t.gains, 10))
        assert result.judged.per_query[t.query]["ndcg@10"] == pytest.approx(
            ndcg_at_k(s[t.judged], t.gains[t.judged], 10))


# ------------------------------------------------------------------ recall stage


def test_recall_at_k_hand_computed():
    judgments = [
        J("qa", "a1", 3.0), J("qa", "a2", 2.33), J("qa", "a3", 2.32),   # relevant: a1, a2 (≥ 2.33)
        J("qb", "b1", 2.67), J("qb", "b2", 1.0),                        # relevant: b1
        J("qc", "c1", 2.0),                                             # none relevant: skipped
    ]
    titles = {p: p for p in ("a1", "a2", "a3", "b1", "b2", "c1", "x", "y")}
    ds = SearchDataset("recall", titles, judgments, HOMEDEPOT_LABELS)
    retrieved = {"qa": ["a3", "a1", "x", "a2"], "qb": ["b2", "y", "b1"], "qc": ["c1"]}
    assert recall_at_k(ds, retrieved, k=1) == pytest.approx(0.0)
    assert recall_at_k(ds, retrieved, k=2) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(ds, retrieved, k=3) == pytest.approx((1 / 2 + 1) / 2)
    assert recall_at_k(ds, retrieved, k=4) == pytest.approx(1.0)
    assert recall_at_k(ds, {"qa": [], "qb": ["b1"]}, k=10) == pytest.approx(0.5)  # empty list counts 0
    assert math.isnan(recall_at_k(ds, {"qc": ["c1"]}, k=10))
