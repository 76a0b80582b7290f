"""Multi-armed bandits that pick a model variant (an *arm*) per request and learn from feedback.

Arms are names: model variants, or ensemble weightings such as ``"w0.3"``. Policies:

* ``epsilon_greedy``: the best mean so far, a uniformly random arm with probability ``epsilon``
  (arms never pulled are tried first);
* ``ucb1``: every arm once, then ``mean + sqrt(ucb_c * ln(total pulls) / pulls)``; ``ucb_c = 2``
  is Auer et al.'s UCB1 for rewards in [0, 1];
* ``thompson``: ``thompson_prior="beta"`` (default) keeps a Beta(1 + Σr, 1 + Σ(1 - r)) posterior
  per arm with each reward *clipped to [0, 1]* (clicks, NDCG, fractional rewards all fit);
  ``"gaussian"`` is for unbounded rewards: mean ~ Normal(Σr / (n + 1), v / (n + 1)) where ``v`` is
  the sample variance with one pseudo-observation of variance 1 (prior mean 0);
* ``linucb``: disjoint LinUCB (Li et al. 2010) on ``context_features(context)``, exploration
  weight ``linucb_alpha``. The other policies ignore the context.

Reward = feedback - ``latency_penalty_per_s`` × latency in seconds (when ``latency_ms`` is given);
it must be finite. State lives in a ``BanditStore`` (``leanrank.serve.bandit_store``): each
``update`` is one atomic read-modify-write of that arm's statistics, so a new ``Bandit`` over the
same ``SQLiteStore`` file continues where the old one stopped, and replicas sharing a store see
each other's updates at their next ``update`` (or ``refresh``). An arm added to the config later
starts fresh; arms removed from the config keep their stored state but are never chosen, and an
``update`` naming one (or any unknown arm) raises ``LeanrankError``.

>>> bandit = make_bandit(BanditConfig(policy="ucb1", arms=("small", "large")))
>>> arm = bandit.choose({"query": "cordless drill", "category": "tools"})
>>> bandit.update(arm, reward=1.0, latency_ms=12.0)
>>> bandit.stats()[arm]["pulls"]
1
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
from dataclasses import dataclass

import numpy as np

from leanrank.core.errors import LeanrankError
from leanrank.serve.bandit_store import BanditStore, MemoryStore

POLICIES = ("epsilon_greedy", "ucb1", "thompson", "linucb")
THOMPSON_PRIORS = ("beta", "gaussian")

# LinUCB context features (change them and stored LinUCB state is refused: FEATURE_DIM is checked).
QUERY_LENGTH_BUCKETS = (1, 2, 4, 7)  # tokens: 1 | 2 | 3-4 | 5-7 | 8+  (0 tokens counts as 1)
CATEGORY_SLOTS = 16
SEGMENT_SLOTS = 4
_LENGTH_SLOTS = len(QUERY_LENGTH_BUCKETS) + 1
FEATURE_DIM = 1 + _LENGTH_SLOTS + 1 + CATEGORY_SLOTS + SEGMENT_SLOTS  # 27
CONTEXT_KEYS = ("query_tokens", "query", "category", "segment")


@dataclass(frozen=True)
class BanditConfig:
    """Policy, arms and hyper-parameters of one bandit (validated on construction).

    >>> BanditConfig(policy="epsilon_greedy", arms=("a", "b"), epsilon=0.05).epsilon
    0.05
    """

    policy: str = "thompson"          # "epsilon_greedy" | "ucb1" | "thompson" | "linucb"
    arms: tuple[str, ...] = ()        # variant names, >= 1, unique
    epsilon: float = 0.1
    ucb_c: float = 2.0
    linucb_alpha: float = 1.0
    latency_penalty_per_s: float = 0.0   # reward -= penalty * latency_seconds
    seed: int = 0
    thompson_prior: str = "beta"      # "beta" (rewards clipped to [0, 1]) | "gaussian" (unbounded)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise LeanrankError(f"unknown bandit policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if isinstance(self.arms, (str, bytes)) or not isinstance(self.arms, (tuple, list)):
            raise LeanrankError(f"BanditConfig.arms must be a tuple of names, got {self.arms!r}")
        object.__setattr__(self, "arms", tuple(self.arms))
        if not self.arms:
            raise LeanrankError("BanditConfig.arms needs at least one arm")
        for arm in self.arms:
            if not isinstance(arm, str) or not arm.strip():
                raise LeanrankError(f"bandit arm names must be non-empty strings, got {arm!r}")
        dupes = sorted({a for a in self.arms if self.arms.count(a) > 1})
        if dupes:
            raise LeanrankError(f"duplicate bandit arm {dupes[0]!r}")
        if not _number(self.epsilon) or not 0.0 <= self.epsilon <= 1.0:
            raise LeanrankError(f"BanditConfig.epsilon must be in [0, 1], got {self.epsilon!r}")
        for name in ("ucb_c", "linucb_alpha", "latency_penalty_per_s"):
            value = getattr(self, name)
            if not _number(value) or value < 0:
                raise LeanrankError(f"BanditConfig.{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise LeanrankError(f"BanditConfig.seed must be an integer >= 0, got {self.seed!r}")
        if self.thompson_prior not in THOMPSON_PRIORS:
            raise LeanrankError(f"BanditConfig.thompson_prior must be beta or gaussian, got {self.thompson_prior!r}")


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value)


def _slot(value, slots: int) -> int:
    """Stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(str(value).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % slots


def context_features(context: dict | None) -> np.ndarray:
    """LinUCB's feature vector (length ``FEATURE_DIM``) of a request context.

    Layout: ``[bias | query length bucket (5, one-hot) | no-category flag | category (16 hashed
    slots) | segment (4 hashed slots)]``. Keys read (others are ignored, missing ones leave their
    block zero):

    * ``query_tokens``: the query length in tokens (int >= 0), or ``query``: the query text
      (tokens = whitespace-separated words); buckets 1, 2, 3-4, 5-7, 8+;
    * ``category``: any string (hashed with blake2b into 16 slots; distinct categories may share
      a slot); absent → the no-category flag;
    * ``segment``: the user segment, or the *already hashed* user id the service passes (never a
      raw id), hashed into 4 slots.

    Only the sums of these vectors reach the store, never the context itself.

    >>> x = context_features({"query": "cordless drill", "category": "tools", "segment": "s1"})
    >>> x.shape, float(x[0]), float(x[2]), float(x.sum())
    ((27,), 1.0, 1.0, 4.0)
    """
    x = np.zeros(FEATURE_DIM)
    x[0] = 1.0
    context = context or {}
    if not isinstance(context, dict):
        raise LeanrankError(f"bandit context must be a dict, got {type(context).__name__}")
    tokens = context.get("query_tokens")
    if tokens is None and context.get("query") is not None:
        tokens = len(str(context["query"]).split())
    if tokens is not None:
        if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)) or tokens < 0:
            raise LeanrankError(f"context query_tokens must be an integer >= 0, got {tokens!r}")
        x[1 + int(np.searchsorted(QUERY_LENGTH_BUCKETS, max(int(tokens), 1)))] = 1.0
    base = 1 + _LENGTH_SLOTS + 1
    if context.get("category") is None:
        x[base - 1] = 1.0
    else:
        x[base + _slot(context["category"], CATEGORY_SLOTS)] = 1.0
    if context.get("segment") is not None:
        x[base + CATEGORY_SLOTS + _slot(context["segment"], SEGMENT_SLOTS)] = 1.0
    return x


@dataclass
class _Arm:
    """Sufficient statistics of one arm (what the store keeps, as JSON)."""

    pulls: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0
    clipped_sum: float = 0.0          # Σ clip(r, 0, 1): the Beta posterior
    A: np.ndarray | None = None       # LinUCB: I + Σ x xᵀ (stored as base64 float64)
    b: np.ndarray | None = None       # LinUCB: Σ r x

    @property
    def mean(self) -> float:
        return self.reward_sum / self.pulls if self.pulls else 0.0

    @classmethod
    def decode(cls, state: dict | None, linear: bool) -> _Arm:
        state = state or {}
        arm = cls(int(state.get("pulls", 0)), float(state.get("reward_sum", 0.0)),
                  float(state.get("reward_sq_sum", 0.0)), float(state.get("clipped_sum", 0.0)))
        if linear:
            if "A" in state and state.get("dim") != FEATURE_DIM:
                raise LeanrankError(f"stored LinUCB state has {state.get('dim')} features, this version "
                                    f"uses {FEATURE_DIM}; use a new store or bandit name")
            arm.A = _unpack(state["A"], (FEATURE_DIM, FEATURE_DIM)) if "A" in state else np.eye(FEATURE_DIM)
            arm.b = _unpack(state["b"], (FEATURE_DIM,)) if "b" in state else np.zeros(FEATURE_DIM)
        return arm

    def encode(self) -> dict:
        out = {"pulls": self.pulls, "reward_sum": self.reward_sum, "reward_sq_sum": self.reward_sq_sum,
               "clipped_sum": self.clipped_sum}
        if self.A is not None:
            out.update(dim=FEATURE_DIM, A=_pack(self.A), b=_pack(self.b))
        return out


def _pack(a: np.ndarray) -> str:
    """float64 little-endian, base64: exact, and decoded far faster than a JSON list of floats."""
    if not np.isfinite(a).all():
        raise LeanrankError("LinUCB state must be finite")
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")


def _unpack(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").reshape(shape).astype(np.float64)


class Bandit:
    """Chooses an arm per request and learns from ``update``; thread-safe. Build with
    ``make_bandit``; subclasses implement ``_scores`` (the arm with the highest score is chosen,
    ties broken at random)."""

    linear = False

    def __init__(self, config: BanditConfig, store: BanditStore | None = None, name: str = "default"):
        self.config = config
        self.store = store if store is not None else MemoryStore()
        self.key = f"{name}:{config.policy}"
        self._lock = threading.Lock()
        self._set_state(self.store.load(self.key))
        total = sum(a.pulls for a in self._arms.values())
        self._rng = np.random.default_rng([config.seed, total])  # a restart does not replay old draws

    def choose(self, context: dict | None = None) -> str:
        """The arm to serve this request."""
        x = context_features(context) if self.linear else None
        with self._lock:
            scores = np.asarray(self._scores(x), dtype=np.float64)
            best = np.flatnonzero(scores == scores.max())
            return self.config.arms[int(best[0] if len(best) == 1 else self._rng.choice(best))]

    def update(self, arm: str, reward: float, context: dict | None = None, latency_ms: float | None = None) -> None:
        """Record feedback for a request served by ``arm`` (pass the context given to ``choose``)."""
        if arm not in self.config.arms:
            raise LeanrankError(f"unknown bandit arm {arm!r}; arms: {', '.join(self.config.arms)}")
        if not (_number(reward) or isinstance(reward, bool)):
            raise LeanrankError(f"bandit reward must be a finite number, got {reward!r}")
        r = float(reward)
        if latency_ms is not None:
            if not _number(latency_ms) or latency_ms < 0:
                raise LeanrankError(f"latency_ms must be a finite number >= 0, got {latency_ms!r}")
            r -= self.config.latency_penalty_per_s * float(latency_ms) / 1000.0
        x = context_features(context) if self.linear else None

        def apply(old: dict | None) -> dict:
            a = _Arm.decode(old, self.linear)
            a.pulls += 1
            a.reward_sum += r
            a.reward_sq_sum += r * r
            a.clipped_sum += min(max(r, 0.0), 1.0)
            if x is not None:
                a.A = a.A + np.outer(x, x)
                a.b = a.b + r * x
            return a.encode()

        states = self.store.update(self.key, arm, apply)  # outside the lock: choose never waits on I/O
        with self._lock:  # concurrent updates may return out of order: keep the newest snapshot
            if sum(int(st.get("pulls", 0)) for st in states.values()) >= self._total_stored:
                self._set_state(states)

    def refresh(self) -> None:
        """Reload every arm's state from the store (replicas that only ``choose``)."""
        states = self.store.load(self.key)
        with self._lock:
            self._set_state(states)

    def stats(self) -> dict[str, dict]:
        """Per arm: ``pulls``, ``share`` of all pulls, ``mean_reward`` (None before the first
        pull) and the policy's own numbers (Thompson's posterior, UCB1's bound, LinUCB's θ)."""
        with self._lock:
            total = sum(a.pulls for a in self._arms.values())
            out = {}
            for name, a in self._arms.items():
                row = {"pulls": a.pulls, "share": a.pulls / total if total else 0.0,
                       "mean_reward": a.mean if a.pulls else None}
                row.update(self._extra_stats(a, total))
                out[name] = row
            return out

    def _set_state(self, states: dict[str, dict]) -> None:
        self._arms = {arm: _Arm.decode(states.get(arm), self.linear) for arm in self.config.arms}
        self._total_stored = sum(int(st.get("pulls", 0)) for st in states.values())
        self._cache: dict = {}

    def _scores(self, x: np.ndarray | None) -> list[float]:
        raise NotImplementedError

    def _extra_stats(self, a: _Arm, total: int) -> dict:
        return {}


class EpsilonGreedy(Bandit):
    def _scores(self, x):
        arms = list(self._arms.values())
        if self._rng.random() < self.config.epsilon:
            return [0.0] * len(arms)  # all tied: a uniform draw
        return [math.inf if a.pulls == 0 else a.mean for a in arms]


class UCB1(Bandit):
    def _scores(self, x):
        total = sum(a.pulls for a in self._arms.values())
        return [self._bound(a, total) for a in self._arms.values()]

    def _bound(self, a: _Arm, total: int) -> float:
        if a.pulls == 0:
            return math.inf
        return a.mean + math.sqrt(self.config.ucb_c * math.log(total) / a.pulls)

    def _extra_stats(self, a, total):
        return {"ucb": self._bound(a, total) if a.pulls else None}


class Thompson(Bandit):
    def _posterior(self, a: _Arm) -> tuple[float, float]:
        if self.config.thompson_prior == "beta":
            return 1.0 + a.clipped_sum, 1.0 + a.pulls - a.clipped_sum
        n = a.pulls
        mean = a.reward_sum / (n + 1)
        var = (a.reward_sq_sum - n * a.mean ** 2 + 1.0) / (n + 1)
        return mean, math.sqrt(max(var, 1e-12) / (n + 1))

    def _scores(self, x):
        params = [self._posterior(a) for a in self._arms.values()]
        if self.config.thompson_prior == "beta":
            return [self._rng.beta(al, be) for al, be in params]
        return [self._rng.normal(m, s) for m, s in params]

    def _extra_stats(self, a, total):
        p, q = self._posterior(a)
        if self.config.thompson_prior == "beta":
            return {"alpha": p, "beta": q, "posterior_mean": p / (p + q)}
        return {"posterior_mean": p, "posterior_sd": q}


class LinUCB(Bandit):
    linear = True

    def _inverses(self) -> list[np.ndarray]:
        if "inv" not in self._cache:
            self._cache["inv"] = [np.linalg.inv(a.A) for a in self._arms.values()]
        return self._cache["inv"]

    def _scores(self, x):
        out = []
        for a, inv in zip(self._arms.values(), self._inverses()):
            theta = inv @ a.b
            out.append(float(theta @ x + self.config.linucb_alpha * math.sqrt(max(float(x @ inv @ x), 0.0))))
        return out

    def _extra_stats(self, a, total):
        return {"theta": np.linalg.solve(a.A, a.b).round(4).tolist()}


_CLASSES = {"epsilon_greedy": EpsilonGreedy, "ucb1": UCB1, "thompson": Thompson, "linucb": LinUCB}


def make_bandit(config: BanditConfig, store: BanditStore | None = None, name: str = "default") -> Bandit:
    """The bandit for ``config.policy`` over ``store`` (``None``: an in-memory ``MemoryStore``).

    State is kept under the key ``"{name}:{policy}"``: give each independent bandit sharing a
    store its own ``name``; a different policy starts from fresh state.

    >>> make_bandit(BanditConfig(policy="linucb", arms=("a",))).choose()
    'a'
    """
    if not isinstance(config, BanditConfig):
        raise LeanrankError(f"make_bandit needs a BanditConfig, got {type(config).__name__}")
    return _CLASSES[config.policy](config, store, name)
