"""Label calibration: map a ranker's logits onto the judged label scale (for RMSE), fitted on
validation judged pairs, never on test.

Training with sampled catalog negatives (target 0) pulls every logit down, so the raw
``sigmoid(logit)`` under-predicts judged pairs' labels. A two-parameter Platt-style map
``label = lo + (hi - lo) * sigmoid(a * logit + b)`` fixes the scale without changing the
ranking (a > 0 is enforced).
"""

from __future__ import annotations

import numpy as np
import torch

from leanrank.core.errors import LeanrankError
from leanrank.data.search import SearchDataset
from leanrank.models.cross_encoder import CrossEncoder


def fit_calibration(logits: np.ndarray, labels: np.ndarray, lo: float, hi: float, iters: int = 500) -> dict:
    """Least-squares fit of (a, b); returns the map and the RMSE before/after."""
    if len(logits) < 10:
        raise LeanrankError(f"calibration needs at least 10 judged pairs, got {len(logits)}")
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
    before = float(np.sqrt(np.mean((lo + (hi - lo) / (1 + np.exp(-logits)) - labels) ** 2)))
    return {"a": float(log_a.exp().detach()), "b": float(b.detach()), "rmse_before": before,
            "rmse_after": float(loss.detach().sqrt()),
            "pairs": len(logits)}


def calibrate_(model: CrossEncoder, valid: SearchDataset, batch_size: int = 64) -> dict:
    """Fit the label map on ``valid``'s judged pairs and store it in the model card."""
    js = valid.judgments
    logits = model.score([j.query for j in js], [valid.titles[j.product_id] for j in js], batch_size=batch_size)
    lo, hi = valid.labels.label_min, valid.labels.label_max
    cal = fit_calibration(logits, np.array([j.label for j in js]), lo, hi)
    model.card.calibration = {**cal, "fitted_on": valid.name}
    model.card.add_step("calibrate", **model.card.calibration)
    return cal
