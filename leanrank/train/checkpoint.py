"""Atomic training checkpoints: model, optimizer, schedule, data position and RNG state.

Loaded with ``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from leanrank.core.io import atomic_path

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(directory: Path, state: dict) -> Path:
    path = Path(directory) / CHECKPOINT
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(directory: Path) -> dict | None:
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(model, optimizer, scheduler, state: dict, **extra) -> dict:
    """What a training loop checkpoints: weights, optimizer, schedule, its JSON state and RNGs."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "state": json.dumps(state), "rng": rng_state(), **extra}


def restore_training(ckpt: dict, model, optimizer, scheduler) -> dict:
    """Load a ``training_state`` checkpoint into the objects; returns the loop's state dict."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return json.loads(ckpt["state"])
