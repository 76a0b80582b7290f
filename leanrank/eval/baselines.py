"""Trivial reference scorers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class RandomScorer:
    """Seeded uniform scores: the floor every model must clear."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def score(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        return self.rng.random(len(queries))
