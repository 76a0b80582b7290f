"""The real Kaggle Home Depot ``train.csv.zip``: counts, labels, split, duplicates (``pytest -m slow``)."""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from pathlib import Path

import pytest

from leanrank.data.search import load_homedepot

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LEANRANK_DATA") or REPO / ".." / "shared" / "data")
ZIP = DATA / "search" / "homedepot" / "train.csv.zip"

ROWS, QUERIES, PRODUCTS, DUPLICATES = 74_067, 11_793, 54_667, 5


@pytest.fixture(scope="module")
def homedepot():
    if not ZIP.is_file():
        pytest.skip(f"real Home Depot data not found: {ZIP} (set LEANRANK_DATA to the data folder)")
    return load_homedepot(ZIP.parent)


@pytest.fixture(scope="module")
def raw_rows():
    if not ZIP.is_file():
        pytest.skip(f"real Home Depot data not found: {ZIP}")
    with zipfile.ZipFile(ZIP) as zf:
        text = zf.read("train.csv").decode("iso-8859-1")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_raw_file_counts(raw_rows):
    assert len(raw_rows) == ROWS
    queries = {re.sub(r"\s+", " ", r["search_term"].strip()) for r in raw_rows}
    assert len(queries) == QUERIES
    assert len({r["product_uid"] for r in raw_rows}) == PRODUCTS


def test_loaded_dataset_counts(homedepot):
    ds = homedepot
    assert len(ds.queries()) == QUERIES
    assert all(q == re.sub(r"\s+", " ", q.strip()) for q in ds.queries())
    assert len(ds.titles) == PRODUCTS
    assert len(ds.judgments) + DUPLICATES == ROWS
    assert ds.report["duplicate_pairs_merged_by_mean"] == DUPLICATES
    assert len({(j.query, j.product_id) for j in ds.judgments}) == len(ds.judgments)
    summary = ds.summary()
    assert summary["queries"] == QUERIES and summary["products"] == PRODUCTS


def test_labels_and_gains(homedepot):
    labels = [j.label for j in homedepot.judgments]
    assert min(labels) == 1.0 and max(labels) == 3.0
    assert all(1.0 <= v <= 3.0 for v in labels)
    assert all(j.gain == pytest.approx(j.label - 1.0) for j in homedepot.judgments)
    relevant = sum(homedepot.is_relevant(j) for j in homedepot.judgments) / len(labels)
    assert 0.5 < relevant < 0.9  # most Home Depot pairs are rated >= 2.33


def test_split_is_query_level_about_80_10_10_and_deterministic(homedepot):
    splits = homedepot.split()
    sizes = {name: len(s.queries()) for name, s in splits.items()}
    assert sum(sizes.values()) == QUERIES
    for name, share in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        assert sizes[name] / QUERIES == pytest.approx(share, abs=0.015), sizes
    sets = {name: set(s.queries()) for name, s in splits.items()}
    assert not (sets["train"] & sets["valid"] or sets["train"] & sets["test"] or sets["valid"] & sets["test"])
    assert sum(len(s.judgments) for s in splits.values()) == len(homedepot.judgments)
    again = load_homedepot(ZIP.parent).split()
    assert all(again[name].queries() == splits[name].queries() for name in splits)
