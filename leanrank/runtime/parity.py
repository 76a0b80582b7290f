"""Parity between two scorers on the same real pairs: the gate every exported graph must pass."""

from __future__ import annotations

import numpy as np

from leanrank.core.errors import LeanrankError


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties get their average rank)."""
    from scipy.stats import rankdata

    if len(a) < 2:
        return 1.0
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if ra.std() == rb.std() else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def parity(reference: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Max/mean absolute score difference and Spearman agreement of ``scores`` vs ``reference``."""
    reference, scores = np.asarray(reference, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if reference.shape != scores.shape:
        raise LeanrankError(f"parity: {reference.shape} reference scores vs {scores.shape}")
    diff = np.abs(reference - scores)
    return {"max_abs_diff": float(diff.max(initial=0.0)), "mean_abs_diff": float(diff.mean()) if len(diff) else 0.0,
            "spearman": spearman(reference, scores), "pairs": int(len(reference))}


def check_parity(reference: np.ndarray, scores: np.ndarray, what: str, max_abs: float | None,
                 min_spearman: float) -> dict[str, float]:
    """``parity`` or a LeanrankError naming the numbers that failed."""
    result = parity(reference, scores)
    failed = []
    if max_abs is not None and result["max_abs_diff"] > max_abs:
        failed.append(f"max |diff| {result['max_abs_diff']:.2e} > {max_abs:.0e}")
    if result["spearman"] < min_spearman:
        failed.append(f"Spearman {result['spearman']:.4f} < {min_spearman}")
    if failed:
        raise LeanrankError(f"{what} fails parity on {result['pairs']} real pairs ({', '.join(failed)}); "
                            "nothing was saved")
    return result
