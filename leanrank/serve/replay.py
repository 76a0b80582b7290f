"""Offline replay: how each bandit policy would have done on traffic simulated from judged queries.

Arms are scorers (model folders, or the built-ins ``bm25``, ``random`` and ``oracle``, a noisy
oracle read from the relevance labels). Each arm reranks every held-out query once under the
rerank protocol (``leanrank.eval.protocol``); its reward for that query is NDCG@k of its ranking
against the graded labels, minus ``latency_penalty_per_s`` × its mean scoring seconds per query.
A simulated request then draws a query uniformly, the policy picks an arm and receives

* ``reward="ndcg"`` (default): that NDCG@k itself, or
* ``reward="click"``: a Bernoulli click with probability NDCG@k;

so thousands of requests cost nothing once the arms have scored. All policies see the same
queries and the same click draws. Regret is the pseudo-regret against the best *fixed* arm:
Σ_t (μ* - μ[a_t]) with μ the arms' mean reward over the query pool (LinUCB, which sees the query's
length and category, may beat the best fixed arm, so its regret can turn negative).

>>> result = run_replay("synthetic", out="runs/bandit-replay")            # doctest: +SKIP
>>> result["policies"]["thompson"]["chosen_arm"]                           # doctest: +SKIP
'oracle'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from leanrank.core.errors import LeanrankError
from leanrank.core.io import atomic_path, write_json
from leanrank.serve.bandit import POLICIES, BanditConfig, make_bandit

REWARDS = ("ndcg", "click")
BUILTIN_ARMS = ("bm25", "random", "oracle")
CURVE_POINTS = 200


@dataclass(frozen=True)
class ReplayConfig:
    """What to simulate (validated on construction).

    >>> ReplayConfig(requests=500, policies=("ucb1",)).tail
    0.2
    """

    requests: int = 2000
    policies: tuple[str, ...] = POLICIES
    seed: int = 0
    reward: str = "ndcg"              # "ndcg" | "click" (Bernoulli with p = NDCG@k)
    k: int = 10
    latency_penalty_per_s: float = 0.0
    epsilon: float = 0.1
    tail: float = 0.2                 # final arm shares: over the last 20% of requests

    def __post_init__(self) -> None:
        for name in ("requests", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LeanrankError(f"replay {name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "policies", tuple(self.policies))
        if not self.policies:
            raise LeanrankError(f"replay needs at least one policy: {', '.join(POLICIES)}")
        for p in self.policies:
            if p not in POLICIES:
                raise LeanrankError(f"unknown bandit policy {p!r}; choose from {', '.join(POLICIES)}")
        if len(set(self.policies)) != len(self.policies):
            raise LeanrankError("replay policies must not repeat")
        if self.reward not in REWARDS:
            raise LeanrankError(f"replay reward must be ndcg or click, got {self.reward!r}")
        if not 0.0 < self.tail <= 1.0:
            raise LeanrankError(f"replay tail must be in (0, 1], got {self.tail!r}")
        # the rest (seed, epsilon, penalty) is checked by BanditConfig
        BanditConfig(policy=self.policies[0], arms=("x",), epsilon=self.epsilon,
                     latency_penalty_per_s=self.latency_penalty_per_s, seed=self.seed)


@dataclass
class ArmRewards:
    """Each arm's reward on each query, computed once."""

    arms: tuple[str, ...]
    queries: list[str]
    ndcg: np.ndarray           # (queries, arms) NDCG@k
    latency_ms: np.ndarray     # (arms,) mean scoring milliseconds per query
    contexts: list[dict]       # per query, what LinUCB sees


class NoisyOracle:
    """Scores a (query, title) pair by its graded gain from the labels plus Gaussian noise
    (``noise`` in gain units; unjudged pairs have gain 0): a known best arm for tests and replay.

    >>> NoisyOracle({("drill", "DeWalt drill"): 2.0}, noise=0.0).score(["drill"], ["DeWalt drill"])
    array([2.])
    """

    def __init__(self, gains: Mapping[tuple[str, str], float], noise: float = 0.5, seed: int = 0):
        self.gains, self.noise = dict(gains), noise
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_dataset(cls, ds, noise: float = 0.5, seed: int = 0) -> NoisyOracle:
        gains: dict[tuple[str, str], float] = {}
        for j in ds.judgments:
            pair = (j.query, ds.titles[j.product_id])
            gains[pair] = max(gains.get(pair, 0.0), j.gain)
        return cls(gains, noise, seed)

    def score(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        base = np.array([self.gains.get((q, t), 0.0) for q, t in zip(queries, titles)], dtype=np.float64)
        return base + self.noise * self.rng.standard_normal(len(base))


def make_arm(spec: str, ds, bm25, seed: int = 0):
    """A scorer from an arm spec: ``bm25``, ``random``, ``oracle`` or a model folder."""
    if spec == "bm25":
        from leanrank.models.bm25 import BM25Scorer

        return BM25Scorer(bm25, ds.titles)
    if spec == "random":
        from leanrank.eval.baselines import RandomScorer

        return RandomScorer(seed)
    if spec == "oracle":
        return NoisyOracle.from_dataset(ds, seed=seed)
    from leanrank.runtime.loading import load_scorer

    return load_scorer(spec)


def arm_rewards(scorers: Mapping[str, object], tasks, titles: Mapping[str, str], k: int = 10,
                contexts: list[dict] | None = None) -> ArmRewards:
    """Score every task with every arm once: NDCG@k per (query, arm) and the mean scoring
    milliseconds per query (all tasks in one batched call, after a one-pair warm-up)."""
    from leanrank.eval.metrics import ndcg_at_k
    from leanrank.eval.protocol import score_tasks

    if not scorers:
        raise LeanrankError("replay needs at least one arm")
    if not tasks:
        raise LeanrankError("no judged queries with a relevant product to replay")
    ndcg = np.zeros((len(tasks), len(scorers)))
    latency = np.zeros(len(scorers))
    first = tasks[0]
    for j, scorer in enumerate(scorers.values()):
        scorer.score([first.query], [titles[first.product_ids[0]]])  # warm-up, not timed
        t0 = time.perf_counter()
        scores = score_tasks(scorer, tasks, titles)
        latency[j] = (time.perf_counter() - t0) * 1000.0 / len(tasks)
        ndcg[:, j] = [ndcg_at_k(s, t.gains, k) for s, t in zip(scores, tasks)]
    contexts = contexts if contexts is not None else [{"query": t.query} for t in tasks]
    return ArmRewards(tuple(scorers), [t.query for t in tasks], ndcg, latency, contexts)


def simulate(rewards: ArmRewards, config: ReplayConfig) -> dict:
    """Run every policy over the same ``config.requests`` simulated requests; JSON-ready numbers."""
    n = config.requests
    rng = np.random.default_rng(config.seed)
    picks_q = rng.integers(len(rewards.queries), size=n)
    clicks_u = rng.random(n)
    expected = rewards.ndcg - config.latency_penalty_per_s * rewards.latency_ms / 1000.0
    mu = expected.mean(axis=0)
    best = int(np.argmax(mu))
    gap = mu[best] - mu
    tail_from = n - max(1, int(round(config.tail * n)))
    points = np.unique(np.linspace(1, n, min(n, CURVE_POINTS)).round().astype(int))
    out = {}
    for policy in config.policies:
        bandit = make_bandit(BanditConfig(policy=policy, arms=rewards.arms, epsilon=config.epsilon,
                                          latency_penalty_per_s=config.latency_penalty_per_s, seed=config.seed))
        index = {a: i for i, a in enumerate(rewards.arms)}
        chosen = np.zeros(n, dtype=np.int64)
        got = np.zeros(n)
        t0 = time.perf_counter()
        for t in range(n):
            q = picks_q[t]
            ctx = rewards.contexts[q]
            a = index[bandit.choose(ctx)]
            p = rewards.ndcg[q, a]
            r = p if config.reward == "ndcg" else float(clicks_u[t] < p)
            bandit.update(rewards.arms[a], r, ctx, latency_ms=float(rewards.latency_ms[a]))
            chosen[t], got[t] = a, r
        regret = np.cumsum(gap[chosen])
        half = n // 2
        tail_counts = np.bincount(chosen[tail_from:], minlength=len(rewards.arms))
        tail_shares = tail_counts / tail_counts.sum()
        out[policy] = {
            "cumulative_regret": float(regret[-1]),
            "regret_first_half": float(regret[half - 1]) if half else 0.0,
            "regret_second_half": float(regret[-1] - (regret[half - 1] if half else 0.0)),
            "mean_reward": float(got.mean()),
            "shares": dict(zip(rewards.arms, (np.bincount(chosen, minlength=len(rewards.arms)) / n).tolist())),
            "final_shares": dict(zip(rewards.arms, tail_shares.tolist())),
            "chosen_arm": rewards.arms[int(np.argmax(tail_shares))],
            "converged_to_best": bool(int(np.argmax(tail_shares)) == best),
            "curve": {"requests": points.tolist(), "regret": regret[points - 1].round(4).tolist()},
            "seconds": round(time.perf_counter() - t0, 3),
        }
    return {
        "config": asdict(config),
        "queries": len(rewards.queries),
        "arms": {a: {f"ndcg@{config.k}": float(rewards.ndcg[:, i].mean()),
                     "latency_ms": float(rewards.latency_ms[i]), "expected_reward": float(mu[i])}
                 for i, a in enumerate(rewards.arms)},
        "best_arm": rewards.arms[best],
        "regret": f"pseudo-regret vs the best fixed arm ({rewards.arms[best]}), expected rewards",
        "policies": out,
    }


def write_plot(result: dict, path: str | Path) -> Path:
    """Cumulative regret vs requests, one line per policy (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for policy, r in result["policies"].items():
        ax.plot(r["curve"]["requests"], r["curve"]["regret"], label=f"{policy} → {r['chosen_arm']}")
    ax.set_xlabel("simulated requests")
    ax.set_ylabel("cumulative regret")
    ax.set_title(f"bandit replay: {result['queries']} queries, best arm {result['best_arm']} "
                 f"(reward: {result['config']['reward']})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _load(dataset: str, data_dir):
    """The dataset and, for the synthetic catalog, each query's category."""
    if dataset == "synthetic":
        from leanrank.data.synthetic import make_catalog

        catalog = make_catalog()
        return catalog.search, {q: intent[0] for q, intent in catalog.intents.items()}
    from leanrank.data.registry import load_search_dataset

    return load_search_dataset(dataset, data_dir), {}


def run_replay(dataset: str = "synthetic", data_dir=None, arms: Mapping[str, str] | None = None,
               config: ReplayConfig = ReplayConfig(), out: str | Path = "runs/bandit-replay",
               split: str = "valid", max_queries: int | None = None,
               log: Callable[[str], None] | None = None) -> dict:
    """``leanrank bandit replay``: score the held-out queries with each arm, simulate every policy,
    write ``replay.json`` and ``regret.png`` under ``out``; returns the JSON's content.

    ``arms`` maps a name to ``bm25``, ``random``, ``oracle`` or a model folder (default: the three
    built-ins). Contexts are the query text and, on the synthetic catalog, its category.
    """
    from leanrank.eval.protocol import build_rerank_tasks
    from leanrank.models.bm25 import BM25Index

    log = log or (lambda _msg: None)
    arms = dict(arms) if arms else {a: a for a in BUILTIN_ARMS}
    if split not in ("train", "valid", "test"):
        raise LeanrankError(f"split must be train, valid or test, got {split!r}")
    if max_queries is not None and max_queries < 1:
        raise LeanrankError(f"max_queries must be a positive integer, got {max_queries!r}")
    for name, spec in arms.items():  # fail before the slow part
        if spec not in BUILTIN_ARMS and not Path(spec).is_dir():
            raise LeanrankError(f"arm {name}: {spec}: model directory not found (or use {', '.join(BUILTIN_ARMS)})")
    full, categories = _load(dataset, data_dir)
    ds = full.split()[split]
    bm25 = BM25Index.build(full.titles)
    tasks = build_rerank_tasks(ds, bm25, max_queries=max_queries, seed=config.seed)
    log(f"{dataset} {split}: {len(tasks)} queries; scoring them with {len(arms)} arms ...")
    scorers = {name: make_arm(spec, ds, bm25, config.seed) for name, spec in arms.items()}
    contexts = [{"query": t.query, "category": categories.get(t.query)} for t in tasks]
    rewards = arm_rewards(scorers, tasks, full.titles, config.k, contexts)
    result = simulate(rewards, config)
    result.update(dataset=dataset, split=split, arm_specs=arms)
    out = Path(out)
    result["files"] = {"json": str(out / "replay.json"), "plot": str(out / "regret.png")}
    write_plot(result, out / "regret.png")
    write_json(out / "replay.json", result)
    return result
