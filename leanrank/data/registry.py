"""Datasets by name: ``synthetic`` (embedded), ``homedepot`` (under the data dir), or a file path."""

from __future__ import annotations

import os
from pathlib import Path

from leanrank.core.errors import LeanrankError
from leanrank.data.search import SearchDataset, load_homedepot, load_relevance

SEARCH_DATASETS = ("synthetic", "homedepot")
DATA_ENV = "LEANRANK_DATA"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """``--data-dir`` if given, else $LEANRANK_DATA; the folder must exist."""
    value = data_dir or os.environ.get(DATA_ENV)
    if not value:
        raise LeanrankError(f"no data folder: pass --data-dir DIR or set {DATA_ENV}")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise LeanrankError(f"{path}: data folder not found")
    return path


def load_search_dataset(name: str, data_dir: str | Path | None = None) -> SearchDataset:
    """Load a search dataset by name (or from a relevance file path)."""
    if name == "synthetic":
        from leanrank.data.synthetic import make_catalog

        return make_catalog().search
    if name == "homedepot":
        return load_homedepot(resolve_data_dir(data_dir) / "search" / "homedepot")
    if Path(name).suffix and Path(name).exists():
        return load_relevance(name)
    raise LeanrankError(f"unknown dataset {name!r}; choose one of {', '.join(SEARCH_DATASETS)} or a file path")
