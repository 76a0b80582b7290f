"""Full-ranking next-item metrics on hand-computed examples, the sampled-99 protocol, popularity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leanrank.core.errors import LeanrankError
from leanrank.eval.fullrank import (
    PopularityScorer,
    evaluate_next_item,
    item_counts,
    rank_metrics,
    target_ranks,
)
from leanrank.eval.metrics import full_ranking_metrics


def fixed(scores: list[float]):
    """A scorer giving every user the same scores (index = item id)."""
    t = torch.tensor(scores)
    return lambda histories: t.expand(len(histories), -1).clone()


def test_target_ranked_third():
    # items 1..5; item 2 scores 0.7 behind items 4 (0.9) and 1 (0.8): 0-based rank 2
    scorer = fixed([99.0, 0.8, 0.7, 0.1, 0.9, 0.2])
    r = evaluate_next_item(scorer, [np.array([3])], [2], n_items=5, ks=(1, 2, 3, 5))
    assert r["ranks"].tolist() == [2] and r["protocol"] == "full" and r["users"] == 1
    assert r["hr@1"] == 0.0 and r["hr@2"] == 0.0 and r["hr@3"] == 1.0 and r["hr@5"] == 1.0
    assert r["ndcg@1"] == 0.0 and r["ndcg@5"] == pytest.approx(1 / math.log2(4))  # = 0.5


def test_history_items_are_excluded_but_not_the_target():
    scorer = fixed([0.0, 0.8, 0.7, 0.1, 0.9, 0.2])
    r = evaluate_next_item(scorer, [np.array([4, 3])], [2], n_items=5, ks=(1, 2, 5))
    assert r["ranks"].tolist() == [1]  # item 4 seen: only item 1 is ahead
    assert r["ndcg@5"] == pytest.approx(1 / math.log2(3)) and r["hr@1"] == 0.0
    r = evaluate_next_item(scorer, [np.array([2, 4, 1])], [2], n_items=5, ks=(1,))
    assert r["ranks"].tolist() == [0] and r["hr@1"] == 1.0  # target seen before: still ranked


def test_ties_are_pessimistic_and_pad_never_counts():
    ranks = target_ranks(torch.tensor([[100.0, 1.0, 1.0, 1.0, 0.0]]), torch.tensor([2]))
    assert ranks.tolist() == [2]  # tied with items 1 and 3: ranked after both; column 0 ignored
    assert rank_metrics(torch.tensor([0, 1, 10]), ks=(1, 10)) == pytest.approx(
        {"hr@1": 1 / 3, "ndcg@1": 1 / 3, "hr@10": 2 / 3, "ndcg@10": (1 + 1 / math.log2(3)) / 3})


def test_agrees_with_full_ranking_metrics_and_is_batch_invariant():
    g = torch.Generator().manual_seed(0)
    n_users, n_items = 37, 50
    scores = torch.randn(n_users, n_items + 1, generator=g)
    targets = torch.randint(1, n_items + 1, (n_users,), generator=g)
    histories = [np.unique(torch.randint(1, n_items + 1, (5,), generator=g).numpy()) for _ in range(n_users)]
    rows = iter(range(n_users))

    def scorer(hist):
        idx = [next(rows) for _ in hist]
        return scores[idx]

    got = evaluate_next_item(scorer, histories, targets.numpy(), n_items, batch_size=8)
    exclude = torch.zeros(n_users, n_items + 1, dtype=torch.bool)
    for i, h in enumerate(histories):
        exclude[i, torch.from_numpy(h)] = True
    exclude[:, 0] = True
    want = full_ranking_metrics(scores, targets, ks=(5, 10, 20), exclude=exclude)
    assert {k: got[k] for k in want} == pytest.approx(want)
    rows = iter(range(n_users))
    whole = evaluate_next_item(scorer, histories, targets.numpy(), n_items, batch_size=1000)
    assert np.array_equal(whole["ranks"], got["ranks"])


def test_sampled_protocol_is_labelled_and_ranks_among_100():
    n_items = 300
    scores = torch.arange(n_items + 1, dtype=torch.float32)  # higher id = better
    histories = [np.array([1, 2, 3])] * 20
    targets = np.full(20, 150)
    full = evaluate_next_item(fixed(scores.tolist()), histories, targets, n_items)
    sampled = evaluate_next_item(fixed(scores.tolist()), histories, targets, n_items, protocol="sampled", seed=1)
    assert full["ranks"].tolist() == [150] * 20  # items 151..300 ahead
    assert "sampled-99" in sampled["protocol"] and "NOT full ranking" in sampled["protocol"]
    ranks = sampled["ranks"]
    assert ranks.min() >= 0 and ranks.max() <= 99 and 30 < ranks.mean() < 70  # about half the negatives
    again = evaluate_next_item(fixed(scores.tolist()), histories, targets, n_items, protocol="sampled", seed=1)
    assert np.array_equal(again["ranks"], ranks)
    pop = np.zeros(n_items + 1)
    pop[1:140] = 1.0  # all popularity mass below the target
    low = evaluate_next_item(fixed(scores.tolist()), histories, targets, n_items, protocol="sampled",
                             negatives="popularity", popularity=pop)
    assert low["ranks"].tolist() == [0] * 20


def test_popularity_scorer_and_counts():
    seqs = [np.array([1, 2, 2, 3]), np.array([2, 4])]
    assert item_counts(seqs, 5).tolist() == [0, 1, 3, 1, 1, 0]
    pop = PopularityScorer.fit(seqs, n_items=5)
    scores = pop([np.array([1]), np.array([2])])
    assert scores.shape == (2, 6) and scores[1].tolist()[1:] == [1.0, 3.0, 1.0, 1.0, 0.0]
    r = evaluate_next_item(pop, [np.array([5]), np.array([2])], [2, 3], n_items=5, ks=(1, 3))
    assert r["ranks"].tolist() == [0, 2]  # user 2 saw item 2; item 3 ties with 1 and 4 (pessimistic)


def test_bad_input():
    scorer = fixed([0.0, 1.0, 2.0])
    with pytest.raises(LeanrankError, match="one target per history"):
        evaluate_next_item(scorer, [np.array([1])], [1, 2], n_items=2)
    with pytest.raises(LeanrankError, match="scorer returned"):
        evaluate_next_item(scorer, [np.array([1])], [2], n_items=5)
    with pytest.raises(LeanrankError, match="protocol"):
        evaluate_next_item(scorer, [np.array([1])], [2], n_items=2, protocol="sampled-100")
    with pytest.raises(ValueError, match="targets must be item ids"):
        target_ranks(torch.zeros(1, 3), torch.tensor([0]))
