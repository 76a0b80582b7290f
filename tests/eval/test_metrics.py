import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

from leanrank.eval.metrics import (
    QueryMetrics,
    auc,
    average_precision,
    bootstrap_ci,
    evaluate_queries,
    full_ranking_metrics,
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    paired_test,
    recall_at_k,
    rmse,
)

L2 = math.log2


# ---------------------------------------------------------------- per-query metrics


@pytest.mark.parametrize("seed", range(40))
def test_ndcg_matches_sklearn_on_tie_free_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    scores = rng.random(n)  # continuous floats: no ties (sklearn averages over ties)
    gains = rng.integers(0, 4, n).astype(float)
    gains[rng.integers(n)] = 3.0  # at least one non-zero gain
    for k in (1, 3, 10, n, n + 5):
        expected = ndcg_score(gains[None], scores[None], k=k)
        assert ndcg_at_k(scores, gains, k) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_ndcg_hand_computed():
    # gains [3, 2, 0, 1] scored so that the ranking is 0, 1, 3, 2: ranked gains 3, 2, 1, 0
    scores = np.array([0.9, 0.7, 0.1, 0.5])
    gains = np.array([3.0, 2.0, 0.0, 1.0])
    assert ndcg_at_k(scores, gains, 4) == pytest.approx(1.0)
    # reversed ranking: ranked gains 0, 1, 2, 3
    rev = -scores
    dcg = 0 / L2(2) + 1 / L2(3) + 2 / L2(4) + 3 / L2(5)
    idcg = 3 / L2(2) + 2 / L2(3) + 1 / L2(4) + 0 / L2(5)
    assert ndcg_at_k(rev, gains, 4) == pytest.approx(dcg / idcg)
    # k=2 truncates both DCG and ideal DCG
    assert ndcg_at_k(rev, gains, 2) == pytest.approx((1 / L2(3)) / (3 + 2 / L2(3)))


def test_rank_metrics_hand_computed():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    rel = np.array([False, True, False, True, True])  # relevant at ranks 2, 4, 5
    assert mrr_at_k(scores, rel, 10) == pytest.approx(1 / 2)
    assert mrr_at_k(scores, rel, 1) == 0.0
    assert recall_at_k(scores, rel, 2) == pytest.approx(1 / 3)
    assert recall_at_k(scores, rel, 4) == pytest.approx(2 / 3)
    assert recall_at_k(scores, rel, 100) == 1.0
    assert hit_rate_at_k(scores, rel, 1) == 0.0
    assert hit_rate_at_k(scores, rel, 2) == 1.0
    assert average_precision(scores, rel) == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    # 0/1 ints are accepted as a mask
    assert mrr_at_k(scores, rel.astype(int), 10) == pytest.approx(1 / 2)


@pytest.mark.parametrize("seed", range(10))
def test_average_precision_matches_sklearn_without_ties(seed):
    rng = np.random.default_rng(seed)
    scores, rel = rng.random(25), rng.random(25) < 0.3
    rel[0] = True
    assert average_precision(scores, rel) == pytest.approx(average_precision_score(rel, scores))


def test_ties_keep_input_order():
    scores = np.array([0.5, 0.5, 0.5, 0.1])
    # the relevant item is the second of three tied items: stable order puts it at rank 2
    assert mrr_at_k(scores, np.array([0, 1, 0, 0]), 10) == 0.5
    assert mrr_at_k(scores, np.array([0, 0, 1, 0]), 10) == pytest.approx(1 / 3)
    assert recall_at_k(scores, np.array([0, 0, 1, 0]), 2) == 0.0
    gains = np.array([0.0, 0.0, 1.0, 0.0])
    assert ndcg_at_k(scores, gains, 3) == pytest.approx(1 / L2(4))
    # and it is deterministic across calls
    assert len({ndcg_at_k(scores, gains, 3) for _ in range(5)}) == 1


def test_undefined_values_are_nan():
    s = np.array([0.3, 0.2, 0.1])
    assert math.isnan(ndcg_at_k(s, np.zeros(3), 10))
    none = np.zeros(3, dtype=bool)
    for fn in (mrr_at_k, recall_at_k, hit_rate_at_k):
        assert math.isnan(fn(s, none, 10))
    assert math.isnan(average_precision(s, none))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ndcg_at_k([1.0, 2.0], [1.0], 10), "length mismatch"),
        (lambda: mrr_at_k([1.0, 2.0], [True], 10), "length mismatch"),
        (lambda: recall_at_k([1.0], [True], 0), "k must be a positive integer"),
        (lambda: ndcg_at_k([1.0], [1.0], -1), "k must be a positive integer"),
        (lambda: ndcg_at_k([1.0], [1.0], 2.5), "k must be a positive integer"),
        (lambda: ndcg_at_k([1.0], [-1.0], 1), "gains must be finite and >= 0"),
        (lambda: ndcg_at_k([float("nan")], [1.0], 1), "scores contain NaN"),
        (lambda: mrr_at_k([1.0, 2.0], [0, 2], 1), "0/1"),
        (lambda: auc([1.0, 2.0], [1, 1]), "one positive and one negative"),
        (lambda: auc([1.0, 2.0], [1, 0, 1]), "length mismatch"),
        (lambda: rmse([1.0, 2.0], [1.0]), "shape mismatch"),
    ],
)
def test_input_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- pointwise


@pytest.mark.parametrize("seed", range(10))
def test_auc_matches_sklearn_including_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, 60).astype(float)  # heavy ties
    labels = rng.integers(0, 2, 60)
    labels[:2] = [0, 1]
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    cont = rng.random(60)
    assert auc(cont, labels.astype(bool)) == pytest.approx(roc_auc_score(labels, cont), abs=1e-12)


def test_auc_hand_computed():
    # positives {0.5, 0.9}, negatives {0.1, 0.5}: wins 0.5>0.1, tie 0.5=0.5, 0.9 beats both
    assert auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx((1 + 0.5 + 2) / 4)
    assert auc([1.0, 1.0], [0, 1]) == 0.5


def test_rmse():
    assert rmse([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert rmse([0.0, 0.0], [3.0, 4.0]) == pytest.approx(math.sqrt((9 + 16) / 2))


# ---------------------------------------------------------------- query-level aggregation


def _queries(n, seed, quality=1.0):
    """n random queries; quality scales how much the scores follow the gains."""
    rng = np.random.default_rng(seed)
    out = {}
    for q in range(n):
        gains = rng.integers(0, 4, 20).astype(float)
        out[f"q{q}"] = (quality * gains + rng.normal(size=20), gains)
    return out


def test_evaluate_queries_values_and_nan_skipping():
    per_query = {
        "a": (np.array([0.9, 0.1]), np.array([2.0, 0.0])),  # perfect
        "b": (np.array([0.9, 0.1]), np.array([0.0, 2.0])),  # relevant at rank 2
        "zero": (np.array([0.9, 0.1]), np.array([0.0, 0.0])),  # undefined
    }
    m = evaluate_queries(per_query, ks=(1, 10), relevant_min_gain=1.0)
    assert isinstance(m, QueryMetrics)
    assert m.n_queries == 3
    assert m.per_query["a"] == {"ndcg@1": 1.0, "mrr@1": 1.0, "recall@1": 1.0,
                                "ndcg@10": 1.0, "mrr@10": 1.0, "recall@10": 1.0}
    assert m.per_query["b"]["mrr@10"] == 0.5 and m.per_query["b"]["recall@1"] == 0.0
    assert m.per_query["b"]["ndcg@10"] == pytest.approx(1 / L2(3))
    assert all(math.isnan(v) for v in m.per_query["zero"].values())
    assert m.mean["mrr@10"] == pytest.approx(0.75)
    assert m.mean["ndcg@10"] == pytest.approx((1 + 1 / L2(3)) / 2)
    assert m.n_valid == {name: 2 for name in m.mean}


def test_relevant_min_gain_threshold():
    per_query = {"q": (np.array([0.9, 0.5, 0.1]), np.array([1.0, 0.0, 3.0]))}
    assert evaluate_queries(per_query, relevant_min_gain=1.0).mean["mrr@10"] == 1.0
    assert evaluate_queries(per_query, relevant_min_gain=2.0).mean["mrr@10"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        evaluate_queries(per_query, relevant_min_gain=0.0)
    with pytest.raises(ValueError, match="k must be"):
        evaluate_queries(per_query, ks=(0,))
    with pytest.raises(ValueError, match="length mismatch"):
        evaluate_queries({"q": (np.zeros(3), np.zeros(2))})


def test_bootstrap_ci_contains_mean_and_narrows():
    small = evaluate_queries(_queries(20, seed=1))
    large = evaluate_queries(_queries(800, seed=1))
    widths = []
    for m in (small, large):
        lo, hi = m.ci("ndcg@10", n_boot=500, seed=0)
        assert lo <= m.mean["ndcg@10"] <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3
    assert small.ci("ndcg@10", seed=3) == small.ci("ndcg@10", seed=3)  # seeded
    with pytest.raises(ValueError, match="unknown metric"):
        small.ci("map@10")


def test_bootstrap_ci_skips_nan_and_validates():
    v = np.array([0.0, 1.0, np.nan, 0.5])
    lo, hi = bootstrap_ci(v, n_boot=2000)
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert bootstrap_ci([0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7))
    with pytest.raises(ValueError):
        bootstrap_ci([np.nan])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], alpha=1.5)


def test_paired_test():
    good = evaluate_queries(_queries(60, seed=2, quality=1.0))
    bad = evaluate_queries(_queries(60, seed=2, quality=0.1))
    res = paired_test(good, bad, "ndcg@10")
    assert res["p_value"] < 1e-6 and res["mean_diff"] > 0 and res["n"] == 60
    same = paired_test(good, good, "ndcg@10")
    assert same == {"p_value": 1.0, "mean_diff": 0.0, "n": 60}
    # symmetric per-query perturbation with zero mean difference: t = 0, p = 1
    vals = good.values("ndcg@10")
    eps = np.where(np.arange(60) % 2 == 0, 0.01, -0.01)
    shifted = QueryMetrics(
        per_query={q: {"ndcg@10": float(v + e)} for q, v, e in zip(good.per_query, vals, eps, strict=True)},
        mean={"ndcg@10": float(np.mean(vals + eps))},
        n_queries=60,
    )
    assert paired_test(good, shifted, "ndcg@10")["p_value"] > 0.99


def test_paired_test_validation():
    a = evaluate_queries(_queries(5, seed=0))
    b = evaluate_queries(_queries(6, seed=0))
    with pytest.raises(ValueError, match="different queries"):
        paired_test(a, b, "ndcg@10")
    with pytest.raises(ValueError, match="unknown metric"):
        paired_test(a, a, "ndcg@5")


# ---------------------------------------------------------------- full-catalog ranking


def _brute_force(scores, target, ks, exclude=None):
    out = {}
    ranks = []
    for b in range(len(target)):
        t = int(target[b])
        ts = float(scores[b, t])
        rank = 0
        for i in range(scores.shape[1]):
            if i == t or (exclude is not None and exclude[b, i]):
                continue
            if float(scores[b, i]) >= ts:  # ties counted before the target (pessimistic)
                rank += 1
        ranks.append(rank)
    for k in ks:
        out[f"hr@{k}"] = float(np.mean([r < k for r in ranks]))
        out[f"ndcg@{k}"] = float(np.mean([1 / L2(r + 2) if r < k else 0.0 for r in ranks]))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_full_ranking_matches_brute_force(seed):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 8, (16, 30), generator=g).float()  # many ties
    target = torch.randint(0, 30, (16,), generator=g)
    exclude = torch.rand(16, 30, generator=g) < 0.2
    exclude[0, target[0]] = True  # the target is never excluded
    ks = (1, 5, 10)
    for ex in (None, exclude):
        got = full_ranking_metrics(scores, target, ks=ks, exclude=ex)
        want = _brute_force(scores.numpy(), target.numpy(), ks, None if ex is None else ex.numpy())
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-12)


def test_full_ranking_ties_are_pessimistic():
    torch = pytest.importorskip("torch")
    scores = torch.zeros(1, 100)  # a constant model must not look perfect
    got = full_ranking_metrics(scores, torch.tensor([0]), ks=(10,))
    assert got == {"hr@10": 0.0, "ndcg@10": 0.0}
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.9]])
    got = full_ranking_metrics(scores, torch.tensor([2]), ks=(2, 3))  # rank 2 (0-based)
    assert got["hr@2"] == 0.0 and got["hr@3"] == 1.0
    assert got["ndcg@3"] == pytest.approx(1 / L2(4))


def test_full_ranking_validation():
    torch = pytest.importorskip("torch")
    s = torch.rand(2, 5)
    with pytest.raises(ValueError, match="need scores"):
        full_ranking_metrics(s, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer item indices"):
        full_ranking_metrics(s, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="k must be"):
        full_ranking_metrics(s, torch.tensor([0, 1]), ks=(0,))
    with pytest.raises(ValueError, match="exclude shape"):
        full_ranking_metrics(s, torch.tensor([0, 1]), exclude=torch.zeros(2, 4, dtype=torch.bool))
