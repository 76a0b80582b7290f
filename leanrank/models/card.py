"""``leanrank.json``: how a model directory was made (parent, steps, metrics)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leanrank.core.io import write_json

CARD_FILE = "leanrank.json"


def label_map(calibration: dict | None, logits, lo: float, hi: float):
    """Logits → labels in [lo, hi]: isotonic steps (``{"method": "isotonic", "x", "y"}``,
    interpolated, clamped) or Platt ``lo + (hi - lo)·sigmoid(a·logit + b)`` (None: a = 1, b = 0)."""
    import numpy as np

    cal = calibration or {"a": 1.0, "b": 0.0}
    if cal.get("method") == "isotonic":     # leanrank.train.calibrate.isotonic_steps
        return np.clip(np.interp(np.asarray(logits, dtype=np.float64), cal["x"], cal["y"]), lo, hi)
    return lo + (hi - lo) / (1.0 + np.exp(-(cal["a"] * np.asarray(logits) + cal["b"])))


@dataclass
class ModelCard:
    kind: str                       # "cross-encoder", "bi-encoder", ...
    parent: str | None = None       # model dir or package this one came from
    steps: list[dict] = field(default_factory=list)   # e.g. {"step": "train", "config": {...}}
    metrics: dict = field(default_factory=dict)
    max_length: int = 48
    label_range: tuple[float, float] = (1.0, 3.0)     # sigmoid(score) maps onto this range
    calibration: dict | None = None   # platt {"a", "b"}: sigmoid(a·score + b); isotonic {"x", "y"} steps
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def add_step(self, step: str, **info) -> None:
        self.steps.append({"step": step, **info})

    def predict_labels(self, logits):
        """Logits → the label scale of training (e.g. 1..3), through the validation-fitted
        calibration when there is one."""
        return label_map(self.calibration, logits, *self.label_range)

    def save(self, directory: str | Path) -> None:
        write_json(Path(directory) / CARD_FILE, asdict(self))

    @classmethod
    def load(cls, directory: str | Path, kind: str) -> ModelCard:
        path = Path(directory) / CARD_FILE
        if not path.exists():
            return cls(kind=kind, parent=str(directory))
        data = json.loads(path.read_text(encoding="utf-8"))
        data["label_range"] = tuple(data.get("label_range", (1.0, 3.0)))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
