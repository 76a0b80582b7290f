"""Model mixing: combine the per-query scores of several rerankers into one ranking.

>>> from leanrank.compress.ensemble import EnsembleConfig, fit_ensemble, ScoreEnsemble
>>> valid = {"teacher": teacher_valid, "student": student_valid}     # name -> one array per query
>>> ens = fit_ensemble(["teacher", "student"], valid, [t.gains for t in tasks], EnsembleConfig(kind="weighted"))
>>> ens.weights                                     # {'teacher': 0.7, 'student': 0.3}
>>> test_scores = ens.combine({"teacher": teacher_test, "student": student_test})
>>> ens.save("runs/ensemble.json"); ScoreEnsemble.load("runs/ensemble.json")

Each model's scores are first normalised per query (``zscore``, ``rank`` in [0, 1] with average
ranks for ties, or ``none``). ``mean`` averages them; ``weighted`` fits non-negative weights
summing to 1 that maximise mean NDCG@k on the validation lists (deterministic coordinate ascent
on a grid over the simplex); ``stacking`` trains a small numpy model (linear, or one tanh hidden
layer plus a linear skip) with the ListNet loss on the normalised scores plus extra
per-candidate ``features`` (name -> one array per query, e.g. ``bm25_features(tasks, index)``);
features are standardised globally and used only by stacking. Lists whose gains are all zero
are left out of fitting (their NDCG is undefined). ``combine`` needs every fitted model name
(and feature) with the same number of queries and candidates; extra names are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leanrank.core.errors import LeanrankError
from leanrank.core.io import write_json

if TYPE_CHECKING:  # pragma: no cover
    from leanrank.eval.protocol import RerankTask
    from leanrank.models.bm25 import BM25Index

KINDS = ("mean", "weighted", "stacking")
NORMALIZATIONS = ("zscore", "rank", "none")
FORMAT = "leanrank-ensemble/1"
Lists = dict[str, list[np.ndarray]]


@dataclass(frozen=True)
class EnsembleConfig:
    """How to mix: ``kind``, per-query ``normalize``, and the options of weighted / stacking."""
    kind: str = "mean"
    normalize: str = "zscore"
    metric_k: int = 10          # NDCG@k maximised by "weighted"
    grid: int = 20              # weighted: a weight moves in steps of 1/grid
    rounds: int = 10            # weighted: at most this many coordinate-ascent rounds
    hidden: int = 0             # stacking: 0 = linear, else tanh hidden units (+ linear skip)
    epochs: int = 300           # stacking: full-batch Adam steps
    lr: float = 0.05
    l2: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise LeanrankError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.normalize not in NORMALIZATIONS:
            raise LeanrankError(f"normalize must be one of {', '.join(NORMALIZATIONS)}; got {self.normalize!r}")
        for name in ("metric_k", "grid", "rounds", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LeanrankError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 0:
            raise LeanrankError(f"hidden must be an integer >= 0, got {self.hidden!r}")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise LeanrankError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not isinstance(self.l2, (int, float)) or not 0 <= self.l2 < float("inf"):
            raise LeanrankError(f"l2 must be a finite number >= 0, got {self.l2!r}")


def normalize_scores(s: np.ndarray, how: str) -> np.ndarray:
    """One query's scores normalised: ``zscore`` (0 if constant), ``rank`` in [0, 1] (best = 1)."""
    s = np.asarray(s, dtype=np.float64)
    if how == "none" or s.size == 0:
        return s.copy()
    if how == "zscore":
        sd = s.std()
        return (s - s.mean()) / sd if sd > 1e-12 else np.zeros_like(s)
    if s.size == 1:
        return np.full(1, 0.5)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0          # 1-based average ranks, ascending
    return (avg_rank[inv] - 1.0) / (s.size - 1)


def _check_lists(kind: str, lists: Lists, names: Sequence[str], lengths: list[int] | None) -> list[int]:
    """Every name present, same number of queries and candidates per query, finite values."""
    for name in names:
        if name not in lists:
            raise LeanrankError(f"{kind} {name!r} missing: got {sorted(lists)}")
        arrays = lists[name]
        if lengths is None:
            lengths = [len(a) for a in arrays]
        if len(arrays) != len(lengths):
            raise LeanrankError(f"{kind} {name!r} has {len(arrays)} queries, expected {len(lengths)}")
        for q, (a, n) in enumerate(zip(arrays, lengths)):
            if (a := np.asarray(a)).ndim != 1 or len(a) != n:
                raise LeanrankError(f"{kind} {name!r}, query {q}: {a.shape} scores, expected {n} candidates")
            if not np.isfinite(a).all():
                raise LeanrankError(f"{kind} {name!r}, query {q}: scores must be finite")
    return lengths or []


@dataclass
class ScoreEnsemble:
    """A fitted mixture of named models; ``combine`` gives one score array per query."""
    names: tuple[str, ...]
    config: EnsembleConfig
    mix: np.ndarray                                   # mean / weighted: one weight per model
    feature_names: tuple[str, ...] = ()
    params: dict[str, np.ndarray] = field(default_factory=dict)   # stacking: mu, sd, w (+ W1, b1, w2)

    @property
    def weights(self) -> dict[str, float]:
        """Model weights; for stacking the linear (skip) coefficient of every input on its normalised scale."""
        if self.config.kind != "stacking":
            return {n: float(w) for n, w in zip(self.names, self.mix)}
        inputs = [*self.names, *(f"feature:{f}" for f in self.feature_names)]
        return {n: float(w) for n, w in zip(inputs, self.params["w"] / self.params["sd"])}

    def combine(self, scores: Lists, features: Lists | None = None) -> list[np.ndarray]:
        """Mixed scores per query from each model's scores (name -> one array per query)."""
        lengths = _check_lists("model", scores, self.names, None)
        if self.config.kind != "stacking":
            return [sum(w * normalize_scores(scores[n][q], self.config.normalize) for n, w in zip(self.names, self.mix))
                    for q in range(len(lengths))]
        _check_lists("feature", features or {}, self.feature_names, lengths)
        x = _stack_inputs(self.names, scores, self.feature_names, features or {}, self.config.normalize)
        flat = _forward(self.params, (x - self.params["mu"]) / self.params["sd"])[0]
        return np.split(flat, np.cumsum(lengths)[:-1]) if lengths else []

    def to_dict(self) -> dict:
        return {"format": FORMAT, "config": asdict(self.config), "names": list(self.names),
                "mix": self.mix.tolist(), "feature_names": list(self.feature_names),
                "params": {k: v.tolist() for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> ScoreEnsemble:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise LeanrankError(f"not a leanrank ensemble (expected format {FORMAT!r})")
        try:
            return cls(tuple(d["names"]), EnsembleConfig(**d["config"]), np.asarray(d["mix"], dtype=np.float64),
                       tuple(d["feature_names"]), {k: np.asarray(v, dtype=np.float64) for k, v in d["params"].items()})
        except (KeyError, TypeError, ValueError) as e:
            raise LeanrankError(f"malformed ensemble: {e}") from None

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (floats round-trip exactly; no pickle)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ScoreEnsemble:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise LeanrankError(f"{path}: cannot read ensemble: {e}") from None
        return cls.from_dict(d)


def fit_ensemble(
    names: Sequence[str],
    valid_scores: Lists,
    valid_gains: list[np.ndarray],
    config: EnsembleConfig | None = None,
    features: Lists | None = None,
) -> ScoreEnsemble:
    """Fit a mixture of ``names`` on validation lists (scores per model, gains per query)."""
    config = config or EnsembleConfig()
    names = tuple(names)
    if not names or len(set(names)) != len(names):
        raise LeanrankError(f"names must be one or more distinct model names, got {list(names)}")
    gains = [np.asarray(g, dtype=np.float64) for g in valid_gains]
    if any(g.ndim != 1 or not np.isfinite(g).all() or (g < 0).any() for g in gains):
        raise LeanrankError("valid_gains must be 1-D arrays of finite gains >= 0, one per query")
    lengths = [len(g) for g in gains]
    _check_lists("model", valid_scores, names, lengths)
    keep = [q for q, g in enumerate(gains) if g.sum() > 0]
    if config.kind != "mean" and not keep:
        raise LeanrankError("no validation query has a gain > 0: nothing to fit")
    m = len(names)
    if config.kind == "mean":
        return ScoreEnsemble(names, config, np.full(m, 1.0 / m))
    if config.kind == "weighted":
        z = [[normalize_scores(valid_scores[n][q], config.normalize) for q in keep] for n in names]
        return ScoreEnsemble(names, config, _coordinate_ascent(z, [gains[q] for q in keep], config))
    feature_names = tuple(sorted(features or {}))
    _check_lists("feature", features or {}, feature_names, lengths)
    sub = {n: [valid_scores[n][q] for q in keep] for n in names}
    sub_f = {f: [features[f][q] for q in keep] for f in feature_names}
    x = _stack_inputs(names, sub, feature_names, sub_f, config.normalize)
    params = _train_listnet(x, [gains[q] for q in keep], m, config)
    return ScoreEnsemble(names, config, np.zeros(m), feature_names, params)


# ---------------------------------------------------------------------------- weighted
def _coordinate_ascent(z: list[list[np.ndarray]], gains: list[np.ndarray], config: EnsembleConfig) -> np.ndarray:
    """Simplex weights maximising mean NDCG@k; ties keep the earlier (closer to equal) weights."""
    m, n_q, width = len(z), len(gains), max(len(g) for g in gains)
    pad = np.zeros((m, n_q, width))
    g = np.zeros((n_q, width))
    valid = np.zeros((n_q, width), dtype=bool)
    for q, gq in enumerate(gains):
        pad[:, q, : len(gq)] = [zq[q] for zq in z]
        g[q, : len(gq)], valid[q, : len(gq)] = gq, True
    k = min(config.metric_k, width)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = -np.sort(-g, axis=1)[:, :k] @ disc

    def mean_ndcg(w: np.ndarray) -> float:
        s = np.where(valid, np.tensordot(w, pad, axes=1), -np.inf)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return float(np.mean(np.take_along_axis(g, top, axis=1) @ disc / ideal))

    w = np.full(m, 1.0 / m)
    best = mean_ndcg(w)
    for _ in range(config.rounds if m > 1 else 0):
        improved = False
        for i in range(m):
            for v in np.arange(config.grid + 1) / config.grid:
                rest = np.delete(w, i)
                rest = rest * (1 - v) / rest.sum() if rest.sum() > 0 else np.full(m - 1, (1 - v) / (m - 1))
                cand = np.insert(rest, i, v)
                value = mean_ndcg(cand)
                if value > best + 1e-12:
                    best, w, improved = value, cand, True
        if not improved:
            break
    return w / w.sum()


# ---------------------------------------------------------------------------- stacking
def _stack_inputs(names, scores: Lists, feature_names, features: Lists, how: str) -> np.ndarray:
    """One row per candidate (all queries concatenated): normalised model scores, then raw features."""
    n_q = len(scores[names[0]])
    cols = [np.concatenate([normalize_scores(scores[n][q], how) for q in range(n_q)] or [np.zeros(0)])
            for n in names]
    cols += [np.concatenate([np.asarray(a, dtype=np.float64) for a in features[f]] or [np.zeros(0)])
             for f in feature_names]
    return np.stack(cols, axis=1)


def _forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    s = x @ p["w"]
    if "W1" not in p:
        return s, None
    h = np.tanh(x @ p["W1"] + p["b1"])
    return s + h @ p["w2"], h


def _train_listnet(x: np.ndarray, gains: list[np.ndarray], m: int, config: EnsembleConfig) -> dict:
    """Full-batch Adam on ListNet (softmax cross-entropy against gains / sum(gains)), seeded."""
    mu, sd = x.mean(axis=0), np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
    x, d = (x - mu) / sd, x.shape[1]
    lengths = np.array([len(g) for g in gains])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    target = np.concatenate([g / g.sum() for g in gains])
    p = {"w": np.concatenate([np.full(m, 1.0 / m), np.zeros(d - m)])}     # start at the mean ensemble
    if config.hidden:
        rng = np.random.default_rng(config.seed)
        p["W1"] = rng.normal(0.0, 1.0 / np.sqrt(d), (d, config.hidden))
        p["b1"] = np.zeros(config.hidden)
        p["w2"] = rng.normal(0.0, 0.1 / np.sqrt(config.hidden), config.hidden)
    m1, m2 = ({k: np.zeros_like(v) for k, v in p.items()} for _ in range(2))
    for step in range(1, config.epochs + 1):
        s, h = _forward(p, x)
        e = np.exp(s - np.repeat(np.maximum.reduceat(s, starts), lengths))
        soft = e / np.repeat(np.add.reduceat(e, starts), lengths)
        ds = (soft - target) / len(gains)                     # d(mean ListNet loss)/d(score)
        grads = {"w": x.T @ ds}
        if h is not None:
            grads["w2"] = h.T @ ds
            da = np.outer(ds, p["w2"]) * (1.0 - h**2)
            grads["W1"], grads["b1"] = x.T @ da, da.sum(axis=0)
        for k, gk in grads.items():
            if k != "b1":
                gk = gk + 2.0 * config.l2 * p[k]
            m1[k] = 0.9 * m1[k] + 0.1 * gk
            m2[k] = 0.999 * m2[k] + 0.001 * gk**2
            p[k] = p[k] - config.lr * (m1[k] / (1 - 0.9**step)) / (np.sqrt(m2[k] / (1 - 0.999**step)) + 1e-8)
    return {"mu": mu, "sd": sd, **p}


# ---------------------------------------------------------------------------- features
def bm25_features(tasks: Sequence[RerankTask], bm25: BM25Index | Sequence[np.ndarray]) -> Lists:
    """Per candidate of each ``RerankTask``: ``bm25`` score and ``bm25_log_rank`` (log of its average
    1-based rank by BM25 within the query). ``bm25`` is a ``BM25Index`` (scored with
    ``index.score(query, product_ids)``) or precomputed scores, one array per task (``score_tasks``)."""
    if hasattr(bm25, "score"):
        raw = [np.asarray(bm25.score(t.query, t.product_ids), dtype=np.float64) for t in tasks]
    else:
        raw = [np.asarray(s, dtype=np.float64) for s in bm25]
        _check_lists("feature", {"bm25": raw}, ["bm25"], [len(t.product_ids) for t in tasks])
    # rank normalisation: best = 1, worst = 0 -> 0-based average rank -> log of the 1-based rank
    log_rank = [np.log1p((1.0 - normalize_scores(s, "rank")) * max(len(s) - 1, 0)) for s in raw]
    return {"bm25": raw, "bm25_log_rank": log_rank}
