"""Model mixing on synthetic lists: A is informative on even queries, B (on another scale) on odd
queries, C is noise; a BM25-like feature is informative everywhere."""

import json

import numpy as np
import pytest

from leanrank.compress.ensemble import (
    EnsembleConfig,
    ScoreEnsemble,
    bm25_features,
    fit_ensemble,
    normalize_scores,
)
from leanrank.core.errors import LeanrankError
from leanrank.eval.metrics import ndcg_at_k
from leanrank.eval.protocol import RerankTask

NAMES = ["a", "b", "c"]


def make_lists(n: int, seed: int, feature_noise: float = 1.5):
    rng = np.random.default_rng(seed)
    scores, gains, feats = {k: [] for k in NAMES}, [], []
    for q in range(n):
        size = int(rng.integers(20, 41))
        g = rng.choice([0.0, 1.0, 2.0], size=size, p=[0.8, 0.12, 0.08])
        g[0] = max(g[0], 1.0)
        scores["a"].append((g if q % 2 == 0 else 0.0) + rng.normal(0, 1, size))
        scores["b"].append(3.0 * ((g if q % 2 == 1 else 0.0) + rng.normal(0, 1, size)))
        scores["c"].append(rng.normal(0, 1, size))
        feats.append(g + rng.normal(0, feature_noise, size))
        gains.append(g)
    return scores, gains, {"bm25like": feats}


@pytest.fixture(scope="module")
def data():
    return make_lists(200, seed=0), make_lists(200, seed=1)


def mean_ndcg(scores, gains):
    return float(np.mean([ndcg_at_k(s, g, 10) for s, g in zip(scores, gains)]))


def test_weighted_beats_mean_on_held_out_and_drops_noise(data):
    (sv, gv, _), (st, gt, _) = data
    mean = fit_ensemble(NAMES, sv, gv, EnsembleConfig(kind="mean"))
    weighted = fit_ensemble(NAMES, sv, gv, EnsembleConfig(kind="weighted"))
    assert mean.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    w = weighted.weights
    assert all(v >= 0 for v in w.values()) and sum(w.values()) == pytest.approx(1.0)
    assert min(w, key=w.get) == "c" and w["c"] < 0.1 and min(w["a"], w["b"]) > 0.2
    held_out_mean, held_out_weighted = mean_ndcg(mean.combine(st), gt), mean_ndcg(weighted.combine(st), gt)
    assert held_out_weighted > held_out_mean + 0.02
    assert held_out_weighted > max(mean_ndcg(st[n], gt) for n in NAMES)   # better than any single model
    again = fit_ensemble(NAMES, sv, gv, EnsembleConfig(kind="weighted"))
    assert again.weights == w                                             # deterministic


@pytest.mark.parametrize("hidden", [0, 8])
def test_stacking_with_an_informative_feature_beats_mean(data, hidden):
    (sv, gv, fv), (st, gt, ft) = data
    config = EnsembleConfig(kind="stacking", hidden=hidden, seed=3)
    stack = fit_ensemble(NAMES, sv, gv, config, features=fv)
    mean = fit_ensemble(NAMES, sv, gv, EnsembleConfig(kind="mean"))
    stacked = mean_ndcg(stack.combine(st, ft), gt)
    assert stacked > mean_ndcg(mean.combine(st), gt) + 0.1
    assert stacked > mean_ndcg(ft["bm25like"], gt) + 0.02                # the models still add something
    assert stack.weights["feature:bm25like"] > 0 and abs(stack.weights["c"]) < stack.weights["a"]
    again = fit_ensemble(NAMES, sv, gv, config, features=fv).combine(st, ft)
    assert all(np.array_equal(x, y) for x, y in zip(stack.combine(st, ft), again))
    with pytest.raises(LeanrankError, match="feature 'bm25like' missing"):
        stack.combine(st)


@pytest.mark.parametrize("normalize", ["zscore", "rank"])
def test_normalisation_makes_the_mean_scale_invariant(data, normalize):
    (sv, gv, _), (st, _, _) = data
    ens = fit_ensemble(NAMES, sv, gv, EnsembleConfig(kind="mean", normalize=normalize))
    scaled = {**st, "c": [1000.0 * s for s in st["c"]]}
    for x, y in zip(ens.combine(st), ens.combine(scaled)):
        assert np.array_equal(np.argsort(-x, kind="stable"), np.argsort(-y, kind="stable"))
    raw = fit_ensemble(NAMES, sv, gv, EnsembleConfig(kind="mean", normalize="none"))  # the test can fail
    assert any(not np.array_equal(np.argsort(-x), np.argsort(-y))
               for x, y in zip(raw.combine(st), raw.combine(scaled)))


def test_normalize_scores_edge_cases():
    np.testing.assert_allclose(normalize_scores(np.array([4.0, 1.0, 2.0, 1.0]), "rank"), [1.0, 1 / 6, 2 / 3, 1 / 6])
    assert normalize_scores(np.array([5.0]), "rank").tolist() == [0.5]
    assert normalize_scores(np.array([2.0, 2.0]), "zscore").tolist() == [0.0, 0.0]     # constant: no NaN
    assert normalize_scores(np.zeros(0), "zscore").size == 0


@pytest.mark.parametrize("kind", ["mean", "weighted", "stacking"])
def test_json_round_trip_gives_identical_scores(data, tmp_path, kind):
    (sv, gv, fv), (st, _, ft) = data
    ens = fit_ensemble(NAMES, sv, gv, EnsembleConfig(kind=kind, hidden=4 if kind == "stacking" else 0), features=fv)
    path = tmp_path / "sub" / "ensemble.json"
    ens.save(path)
    loaded = ScoreEnsemble.load(path)
    assert json.loads(path.read_text())["format"] == "leanrank-ensemble/1"
    assert loaded.config == ens.config and loaded.weights == ens.weights
    assert all(np.array_equal(x, y) for x, y in zip(ens.combine(st, ft), loaded.combine(st, ft)))
    assert ScoreEnsemble.from_dict(ens.to_dict()).names == ens.names
    with pytest.raises(LeanrankError, match="not a leanrank ensemble"):
        ScoreEnsemble.from_dict({"format": "other"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LeanrankError, match="bad.json"):
        ScoreEnsemble.load(tmp_path / "bad.json")


@pytest.mark.parametrize("field_, value", [("kind", "median"), ("normalize", "minmax"), ("metric_k", 0),
                                           ("hidden", -1), ("lr", 0.0), ("l2", -1.0), ("grid", 2.5)])
def test_config_validation_names_the_field(field_, value):
    with pytest.raises(LeanrankError, match=f"^{field_} must be"):
        EnsembleConfig(**{field_: value})


def test_bad_inputs_raise(data):
    (sv, gv, _), (st, _, _) = data
    ens = fit_ensemble(NAMES, sv, gv)
    with pytest.raises(LeanrankError, match="model 'c' missing"):
        ens.combine({"a": st["a"], "b": st["b"]})
    with pytest.raises(LeanrankError, match="'b' has 199 queries, expected 200"):
        ens.combine({**st, "b": st["b"][:-1]})
    with pytest.raises(LeanrankError, match="'c', query 5"):
        ens.combine({**st, "c": [s if i != 5 else s[:-1] for i, s in enumerate(st["c"])]})
    assert len(ens.combine({**st, "extra": st["a"]})) == 200                  # extra names are ignored
    with pytest.raises(LeanrankError, match="names"):
        fit_ensemble(["a", "a"], sv, gv)
    with pytest.raises(LeanrankError, match="gain > 0"):
        fit_ensemble(NAMES, sv, [np.zeros_like(g) for g in gv], EnsembleConfig(kind="weighted"))
    with pytest.raises(LeanrankError, match="valid_gains"):
        fit_ensemble(NAMES, sv, [-g for g in gv])


def test_bm25_features_from_an_index_and_from_scores():
    from leanrank.models.bm25 import BM25Index

    index = BM25Index.build({"p1": "cordless drill", "p2": "paint brush", "p3": "drill bit set", "p4": "garden hose"})
    task = RerankTask("cordless drill", ["p2", "p1", "p3", "p4"], np.array([0.0, 2.0, 1.0, 0.0]),
                      np.ones(4, dtype=bool), np.array([1.0, 3.0, 2.0, 1.0]))
    feats = bm25_features([task], index)
    bm25, log_rank = feats["bm25"][0], feats["bm25_log_rank"][0]
    assert bm25[1] > bm25[2] > 0 and bm25[0] == bm25[3] == 0
    np.testing.assert_allclose(log_rank, np.log([3.5, 1.0, 2.0, 3.5]))      # tied zeros share rank 3.5
    precomputed = bm25_features([task], [bm25])
    np.testing.assert_array_equal(precomputed["bm25_log_rank"][0], log_rank)
    with pytest.raises(LeanrankError, match="query 0"):
        bm25_features([task], [bm25[:2]])
