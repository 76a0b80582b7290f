"""Next-item evaluation: HR@k and NDCG@k of one held-out item per user.

Conventions (``protocol="full"``, the primary number):

* The target is ranked against **all** items 1..n_items (no sampled negatives); id 0 (padding)
  never counts.
* The user's history items (every item before the target: the train items for validation,
  train + validation item for test) are removed from the ranking, except the target itself
  when it also occurs in the history (as in the S3-Rec evaluation code).
* Ties are pessimistic: the target ranks after every other item with the same score (as
  ``leanrank.eval.metrics.full_ranking_metrics``), so constant scores cannot look good.
* HR@k = 1 if the 0-based rank < k; NDCG@k = 1 / log2(rank + 2) if rank < k, else 0;
  both averaged over users.

``protocol="sampled"`` is the older **99-sampled-negatives** protocol (target ranked against
99 random items the user never interacted with, uniform or popularity-weighted); its numbers are
much higher and are labelled ``sampled-99`` in the results; do not compare them with full-ranking
ones.

>>> import torch
>>> ranks = target_ranks(torch.tensor([[0.0, 3.0, 2.0, 1.0, 5.0]]), torch.tensor([2]))
>>> ranks.tolist(), rank_metrics(ranks, ks=(1, 5))["ndcg@5"]      # 0-based rank 2 → 1/log2(4)
([2], 0.5)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from leanrank.core.errors import LeanrankError

KS = (5, 10, 20)
Scorer = Callable[[list[np.ndarray]], torch.Tensor]  # histories → scores [B, n_items + 1]


def target_ranks(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each row's target among items 1..N (column 0 ignored), pessimistic ties;
    ``exclude`` [B, N + 1] bool removes items (never the target)."""
    if scores.ndim != 2 or target.shape != scores.shape[:1]:
        raise ValueError(f"need scores [B, n_items + 1] and target [B], got {tuple(scores.shape)}, "
                         f"{tuple(target.shape)}")
    if ((target < 1) | (target >= scores.shape[1])).any():
        raise ValueError("targets must be item ids in 1..n_items")
    scores = scores.float()
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    keep = torch.ones_like(scores, dtype=torch.bool) if exclude is None else ~exclude
    keep[:, 0] = False
    idx = target.long()[:, None]
    keep = keep.scatter(1, idx, True)
    t = scores.gather(1, idx)
    return ((scores > t) & keep).sum(1) + ((scores == t) & keep).sum(1) - 1


def rank_metrics(ranks: torch.Tensor | np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Mean HR@k and NDCG@k from 0-based ranks."""
    r = torch.as_tensor(ranks).double()
    if r.numel() == 0:
        raise ValueError("no ranks to average")
    out = {}
    for k in ks:
        hit = (r < k).double()
        out[f"hr@{k}"] = hit.mean().item()
        out[f"ndcg@{k}"] = (hit / torch.log2(r + 2.0)).mean().item()
    return out


def evaluate_next_item(
    scorer: Scorer,
    histories: Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    n_items: int,
    ks: Sequence[int] = KS,
    batch_size: int = 256,
    protocol: str = "full",
    n_negatives: int = 99,
    negatives: str = "uniform",
    popularity: np.ndarray | None = None,
    seed: int = 0,
) -> dict:
    """HR@k / NDCG@k of ``scorer`` over users, in batches of ``batch_size`` histories.

    Returns ``{"protocol", "users", <metrics>..., "ranks"}`` (ranks: 0-based, per user). With
    ``protocol="sampled"``, ``n_negatives`` non-history items per user are drawn (``negatives``:
    ``uniform`` or ``popularity``, which needs ``popularity`` counts per item id) from ``seed``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets) or len(targets) == 0:
        raise LeanrankError(f"need one target per history and at least one user, got {len(histories)} "
                            f"histories and {len(targets)} targets")
    if protocol not in ("full", "sampled"):
        raise LeanrankError(f"protocol must be 'full' or 'sampled', got {protocol!r}")
    if negatives not in ("uniform", "popularity") or (negatives == "popularity" and popularity is None):
        raise LeanrankError("negatives must be 'uniform', or 'popularity' with popularity counts")
    rng = np.random.default_rng(seed)
    ranks = []
    for start in range(0, len(targets), batch_size):
        hist = [np.asarray(h, dtype=np.int64) for h in histories[start : start + batch_size]]
        tgt = torch.from_numpy(targets[start : start + batch_size])
        scores = scorer(hist).float().cpu()
        if scores.shape != (len(hist), n_items + 1):
            raise LeanrankError(f"scorer returned {tuple(scores.shape)}, expected {(len(hist), n_items + 1)}")
        exclude = torch.zeros_like(scores, dtype=torch.bool)
        for i, h in enumerate(hist):
            exclude[i, torch.from_numpy(h)] = True
        if protocol == "sampled":
            exclude = _sampled_exclusion(exclude, tgt, n_negatives, negatives, popularity, rng)
        ranks.append(target_ranks(scores, tgt, exclude))
    ranks_t = torch.cat(ranks)
    name = "full" if protocol == "full" else f"sampled-{n_negatives} ({negatives} negatives; NOT full ranking)"
    return {"protocol": name, "users": len(targets), **rank_metrics(ranks_t, ks), "ranks": ranks_t.numpy()}


def _sampled_exclusion(seen: torch.Tensor, target: torch.Tensor, n_neg: int, negatives: str,
                       popularity: np.ndarray | None, rng: np.random.Generator) -> torch.Tensor:
    """Exclude everything except the target and ``n_neg`` sampled never-seen items per row."""
    n = seen.shape[1]
    exclude = torch.ones_like(seen)
    for i in range(len(seen)):
        allowed = ~seen[i].numpy()
        allowed[0] = allowed[int(target[i])] = False
        pool = np.flatnonzero(allowed)
        if len(pool) < n_neg:
            raise LeanrankError(f"only {len(pool)} candidate negatives for a user, need {n_neg}")
        p = None
        if negatives == "popularity":
            w = np.asarray(popularity, dtype=np.float64)[:n][pool] + 1e-12
            p = w / w.sum()
        exclude[i, torch.from_numpy(rng.choice(pool, n_neg, replace=False, p=p))] = False
    return exclude


class PopularityScorer:
    """Baseline: every user gets the item counts of the training sequences as scores.

    >>> PopularityScorer.fit([np.array([1, 2, 2])], n_items=3)([np.array([1])]).tolist()
    [[-inf, 1.0, 2.0, 0.0]]
    """

    def __init__(self, counts: np.ndarray):
        self.counts = torch.as_tensor(np.asarray(counts, dtype=np.float32))
        self.counts[0] = float("-inf")

    @classmethod
    def fit(cls, sequences: Sequence[np.ndarray], n_items: int) -> PopularityScorer:
        return cls(item_counts(sequences, n_items))

    def __call__(self, histories: list[np.ndarray]) -> torch.Tensor:
        return self.counts.expand(len(histories), -1).clone()


def item_counts(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Interactions per item id (index 0 = padding, always 0)."""
    counts = np.zeros(n_items + 1, dtype=np.int64)
    for s in sequences:
        np.add.at(counts, np.asarray(s, dtype=np.int64), 1)
    counts[0] = 0
    return counts


def model_scorer(model) -> Scorer:
    """A ``SeqRec``-like model (``score_histories``) as a scorer."""
    return lambda histories: model.score_histories([h.tolist() for h in histories])
