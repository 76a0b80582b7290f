"""Label calibration: map a ranker's logits onto the judged label scale (for RMSE), fitted on
validation judged pairs, never on test.

Training with sampled catalog negatives (target 0) pulls every logit down, so the raw
``sigmoid(logit)`` under-predicts judged pairs' labels. A two-parameter Platt-style map
``label = lo + (hi - lo) * sigmoid(a * logit + b)`` fixes the scale without changing the
ranking (a > 0 is enforced). ``isotonic`` fits a monotone non-decreasing step map instead
(pool-adjacent-violators; interpolated between its steps, clamped outside): more flexible, still
order-preserving, so ranking metrics never change — only the predicted labels do.

>>> cal = fit_calibration(np.arange(12.0), np.r_[[1.0] * 6, [3.0] * 6], 1.0, 3.0, method="isotonic")
>>> (cal["method"], round(cal["rmse_after"], 6))
('isotonic', 0.0)
"""

from __future__ import annotations

import numpy as np
import torch

from leanrank.core.errors import LeanrankError
from leanrank.data.search import SearchDataset
from leanrank.models.card import label_map
from leanrank.models.cross_encoder import CrossEncoder

METHODS = ("platt", "isotonic")


def isotonic_steps(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """Least-squares monotone non-decreasing fit of ``y`` on ``x`` (tied x pooled first, then pool
    adjacent violators), as breakpoints (each block's first and last x at the block's mean) for
    ``np.interp``; the same fit as scikit-learn's ``IsotonicRegression``."""
    ux, inverse = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True)
    w0 = np.bincount(inverse).astype(np.float64)
    y0 = np.bincount(inverse, weights=np.asarray(y, dtype=np.float64)) / w0
    means, weights, starts = [], [], []
    for i in range(len(ux)):
        means.append(y0[i])
        weights.append(w0[i])
        starts.append(i)
        while len(means) > 1 and means[-2] >= means[-1]:
            w = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w
            weights[-2] = w
            del means[-1], weights[-1], starts[-1]
    ends = [*starts[1:], len(ux)]
    bx, by = [], []
    for m, a, b in zip(means, starts, ends):
        bx += [float(ux[a]), float(ux[b - 1])]
        by += [float(m), float(m)]
    return bx, by


def fit_calibration(logits: np.ndarray, labels: np.ndarray, lo: float, hi: float, iters: int = 500,
                    method: str = "platt") -> dict:
    """Least-squares fit of the map (``platt``: a, b; ``isotonic``: breakpoints); returns the map
    and the in-sample RMSE before/after."""
    if len(logits) < 10:
        raise LeanrankError(f"calibration needs at least 10 judged pairs, got {len(logits)}")
    if method not in METHODS:
        raise LeanrankError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    def rmse(cal: dict | None) -> float:
        return float(np.sqrt(np.mean((label_map(cal, logits, lo, hi) - labels) ** 2)))

    before = rmse(None)
    if method == "isotonic":
        bx, by = isotonic_steps(logits, labels)
        cal = {"method": "isotonic", "x": bx, "y": by}
        return {**cal, "rmse_before": before, "rmse_after": rmse(cal), "pairs": len(logits)}
    x = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    log_a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([log_a, b], lr=0.05)
    for _ in range(iters):
        opt.zero_grad()
        pred = lo + (hi - lo) * torch.sigmoid(log_a.exp() * x + b)
        loss = ((pred - y) ** 2).mean()
        loss.backward()
        opt.step()
    return {"method": "platt", "a": float(log_a.exp().detach()), "b": float(b.detach()), "rmse_before": before,
            "rmse_after": float(loss.detach().sqrt()),
            "pairs": len(logits)}


def calibrate_(model: CrossEncoder, valid: SearchDataset, batch_size: int = 64, method: str = "platt") -> dict:
    """Fit the label map on ``valid``'s judged pairs and store it in the model card."""
    js = valid.judgments
    logits = model.score([j.query for j in js], [valid.titles[j.product_id] for j in js], batch_size=batch_size)
    lo, hi = valid.labels.label_min, valid.labels.label_max
    cal = fit_calibration(logits, np.array([j.label for j in js]), lo, hi, method=method)
    model.card.calibration = {**cal, "fitted_on": valid.name}
    model.card.add_step("calibrate", **model.card.calibration)
    return cal
