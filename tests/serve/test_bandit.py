"""Bandit policies: convergence, regret, context, latency penalty, config and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanrank.core.errors import LeanrankError
from leanrank.serve.bandit import (
    FEATURE_DIM,
    POLICIES,
    BanditConfig,
    context_features,
    make_bandit,
)
from leanrank.serve.bandit_store import MemoryStore

PROBS = {"low": 0.2, "mid": 0.5, "high": 0.8}


def run_bernoulli(policy: str, steps: int = 2000, seed: int = 0, **kw):
    """Pulls and per-step pseudo-regret on a stationary 3-arm Bernoulli problem."""
    bandit = make_bandit(BanditConfig(policy=policy, arms=tuple(PROBS), seed=seed, **kw))
    rng = np.random.default_rng(seed + 100)
    picks, regret = [], []
    for _ in range(steps):
        arm = bandit.choose()
        bandit.update(arm, float(rng.random() < PROBS[arm]))
        picks.append(arm)
        regret.append(max(PROBS.values()) - PROBS[arm])
    return bandit, picks, np.array(regret)


@pytest.mark.parametrize("policy", POLICIES)
def test_converges_to_the_best_arm_with_sublinear_regret(policy):
    first = second = 0.0
    for seed in range(3):  # regret of one run is noisy; the sum over three is not
        bandit, picks, regret = run_bernoulli(policy, steps=1200, seed=seed)
        share = np.mean([p == "high" for p in picks[600:]])
        if policy == "epsilon_greedy":
            assert abs(share - (1 - 0.1 + 0.1 / 3)) < 0.04, share
        else:
            assert share > 0.8, share
        first, second = first + regret[:600].sum(), second + regret[600:].sum()
        stats = bandit.stats()
        assert sum(s["pulls"] for s in stats.values()) == 1200
        assert stats["high"]["mean_reward"] == pytest.approx(0.8, abs=0.05)
        assert math.isclose(sum(s["share"] for s in stats.values()), 1.0)
    if policy == "epsilon_greedy":  # linear by design: ε × mean gap (0.3) per step, after the start
        assert 3 * 600 * 0.1 * 0.3 * 0.6 < second < 3 * 600 * 0.1 * 0.3 * 1.5, second
    else:
        assert second < first, (first, second)


def test_linucb_learns_a_context_dependent_best_arm_better_than_ucb1():
    best = {"paint": "A", "tools": "B"}  # A pays 0.8 on paint and 0.2 on tools; B the reverse
    assert not np.array_equal(context_features({"category": "paint"}), context_features({"category": "tools"}))

    def correct_share(policy: str) -> float:
        bandit = make_bandit(BanditConfig(policy=policy, arms=("A", "B"), seed=1))
        rng = np.random.default_rng(7)
        hits = []
        for _ in range(1500):
            ctx = {"category": "paint" if rng.random() < 0.5 else "tools", "query": "drill"}
            arm = bandit.choose(ctx)
            bandit.update(arm, float(rng.random() < (0.8 if arm == best[ctx["category"]] else 0.2)), ctx)
            hits.append(arm == best[ctx["category"]])
        return float(np.mean(hits[750:]))

    linucb, ucb1 = correct_share("linucb"), correct_share("ucb1")
    assert linucb > 0.85, linucb
    assert linucb > ucb1 + 0.25, (linucb, ucb1)


@pytest.mark.parametrize("policy", ["ucb1", "thompson"])
def test_latency_penalty_flips_the_choice(policy):
    def winner(penalty: float) -> str:
        bandit = make_bandit(BanditConfig(policy=policy, arms=("fast", "slow"), latency_penalty_per_s=penalty))
        reward = {"fast": 0.5, "slow": 0.55}
        latency = {"fast": 10.0, "slow": 300.0}
        for _ in range(600):
            arm = bandit.choose()
            bandit.update(arm, reward[arm], latency_ms=latency[arm])
        return max(bandit.stats().items(), key=lambda kv: kv[1]["pulls"])[0]

    assert winner(0.0) == "slow"
    assert winner(1.0) == "fast"  # 0.55 - 0.3 < 0.5 - 0.01


def test_gaussian_thompson_handles_negative_rewards():
    bandit = make_bandit(BanditConfig(policy="thompson", arms=("a", "b"), thompson_prior="gaussian"))
    rng = np.random.default_rng(0)
    for _ in range(800):
        arm = bandit.choose()
        bandit.update(arm, rng.normal(-2.0 if arm == "a" else -1.0, 1.0))
    stats = bandit.stats()
    assert stats["b"]["pulls"] > 600
    assert stats["b"]["posterior_mean"] == pytest.approx(-1.0, abs=0.2)
    assert stats["b"]["posterior_sd"] > 0


def test_stats_show_policy_numbers():
    th = make_bandit(BanditConfig(arms=("a", "b")))
    th.update("a", 1.0)
    th.update("a", 5.0)  # clipped to 1 for the Beta posterior, raw in the mean
    assert th.stats()["a"] | {} == {"pulls": 2, "share": 1.0, "mean_reward": 3.0, "alpha": 3.0, "beta": 1.0,
                                    "posterior_mean": 0.75}
    assert th.stats()["b"]["mean_reward"] is None
    lin = make_bandit(BanditConfig(policy="linucb", arms=("a",)))
    lin.update("a", 1.0, {"category": "x"})
    assert len(lin.stats()["a"]["theta"]) == FEATURE_DIM
    assert make_bandit(BanditConfig(policy="ucb1", arms=("a",))).stats()["a"]["ucb"] is None


def test_new_arm_in_the_config_starts_fresh_over_an_existing_store():
    store = MemoryStore()
    old = make_bandit(BanditConfig(policy="ucb1", arms=("a", "b")), store)
    for arm in ("a", "b", "a"):
        old.update(arm, 1.0)
    new = make_bandit(BanditConfig(policy="ucb1", arms=("a", "b", "c")), store)
    assert {a: s["pulls"] for a, s in new.stats().items()} == {"a": 2, "b": 1, "c": 0}
    assert new.choose() == "c"  # never pulled: UCB1 tries it first
    fewer = make_bandit(BanditConfig(policy="ucb1", arms=("b",)), store)
    assert fewer.choose() == "b" and list(fewer.stats()) == ["b"]


def test_context_features_buckets_and_hashing():
    bare = context_features(None)
    assert bare.shape == (FEATURE_DIM,) and bare[0] == 1.0 and bare.sum() == 2.0  # bias + no-category
    one, three, long = (context_features({"query_tokens": n}) for n in (1, 3, 12))
    assert one[1] == 1.0 and three[3] == 1.0 and long[5] == 1.0
    assert long.sum() == 3.0 and long[6] == 1.0  # the 8+ bucket and the no-category flag are distinct
    assert np.array_equal(context_features({"query": "a b c"}), three)
    full = context_features({"query": "drill", "category": "tools", "segment": "9f2c", "user": "ignored"})
    assert full.sum() == 4.0
    assert np.array_equal(full, context_features({"query_tokens": 1, "category": "tools", "segment": "9f2c"}))
    with pytest.raises(LeanrankError, match="query_tokens"):
        context_features({"query_tokens": -1})
    with pytest.raises(LeanrankError, match="dict"):
        context_features(["tools"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(policy="softmax"), "unknown bandit policy 'softmax'"),
    (dict(arms=()), "at least one arm"),
    (dict(arms=("a", "b", "a")), "duplicate bandit arm 'a'"),
    (dict(arms="ab"), "tuple of names"),
    (dict(arms=("a", "")), "non-empty"),
    (dict(epsilon=1.5), "epsilon must be in"),
    (dict(epsilon=-0.1), "epsilon must be in"),
    (dict(epsilon=float("nan")), "epsilon must be in"),
    (dict(ucb_c=-1.0), "ucb_c"),
    (dict(linucb_alpha=float("inf")), "linucb_alpha"),
    (dict(latency_penalty_per_s=-0.5), "latency_penalty_per_s"),
    (dict(seed=True), "seed"),
    (dict(thompson_prior="poisson"), "thompson_prior"),
])
def test_bad_config_is_a_leanrank_error(kwargs, match):
    with pytest.raises(LeanrankError, match=match):
        BanditConfig(**{"arms": ("a", "b"), **kwargs})


def test_lists_become_tuples():
    assert BanditConfig(arms=["a", "b"]).arms == ("a", "b")


def test_bad_updates_are_refused_and_change_nothing():
    bandit = make_bandit(BanditConfig(policy="ucb1", arms=("a", "b")))
    bandit.update("a", True)
    before = bandit.stats()
    for args, kwargs, match in [(("c", 1.0), {}, "unknown bandit arm 'c'"),
                                (("a", float("nan")), {}, "finite"),
                                (("a", float("inf")), {}, "finite"),
                                (("a", "1"), {}, "finite"),
                                (("a", 1.0), {"latency_ms": -3.0}, "latency_ms"),
                                (("a", 1.0), {"latency_ms": float("nan")}, "latency_ms")]:
        with pytest.raises(LeanrankError, match=match):
            bandit.update(*args, **kwargs)
    assert bandit.stats() == before
    with pytest.raises(LeanrankError, match="BanditConfig"):
        make_bandit({"policy": "ucb1"})
