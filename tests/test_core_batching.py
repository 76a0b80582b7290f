"""The inference loop shared by every backend puts scores back in input order."""

import numpy as np
import pytest

from leanrank.core.batching import score_in_batches
from leanrank.core.errors import LeanrankError


def test_scores_come_back_in_input_order_and_batches_are_bounded():
    queries = [f"q{i}" for i in range(23)]
    titles = ["x" * (i * 7 % 13) for i in range(23)]
    seen = []

    def run_batch(qs, ts):
        seen.append(len(qs))
        return np.array([int(q[1:]) for q in qs], dtype=np.float32)

    out = score_in_batches(queries, titles, 5, run_batch)
    assert out.tolist() == list(range(23))
    assert max(seen) == 5 and sum(seen) == 23
    assert score_in_batches([], [], 5, run_batch).shape == (0,)
    with pytest.raises(LeanrankError, match="2 queries but 1 titles"):
        score_in_batches(["a", "b"], ["t"], 5, run_batch)
