"""Download public benchmark datasets: pinned sha256, resumable ``.part`` files, atomic rename.

Datasets behind a login (Kaggle) or that need a manual export raise
:class:`ManualDownloadRequired`, whose message is the step-by-step instructions.

>>> download("amazon-beauty", "data")                  # doctest: +SKIP
[PosixPath('data/rec/amazon-beauty/Beauty.txt'), ...]
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from leanrank.core.errors import LeanrankError, require

CHUNK = 1 << 16
BACKOFF_S = 1.0  # first retry delay; doubles on every further attempt (tests set it to 0)
USER_AGENT = "leanrank-download/1"


class ManualDownloadRequired(LeanrankError):
    """The dataset cannot be fetched automatically; the message says how to get it."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives, where it lands, and its pinned checksum."""

    url: str
    filename: str  # relative path under the dataset folder
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset: downloadable ``files`` and/or ``manual`` instructions."""

    name: str
    description: str
    files: tuple[RemoteFile, ...] = ()
    manual: str | None = None  # instructions when it cannot be downloaded ({dest}: target folder)
    subdir: str = ""  # where under --to it lands, e.g. "rec/amazon-beauty"


# Checksums and sizes were pinned from the S3-Rec copies in /work/shared/data (see its SHA256SUMS).
_S3REC = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"

REGISTRY: dict[str, DatasetSource] = {
    s.name: s
    for s in (
        DatasetSource(
            "amazon-beauty",
            "Amazon Beauty 5-core, S3-Rec preprocessing (sequential recommendation)",
            files=(
                RemoteFile(_S3REC + "Beauty.txt", "Beauty.txt",
                           "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8", 1090094),
                RemoteFile(_S3REC + "Beauty_item2attributes.json", "Beauty_item2attributes.json",
                           "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4", 305674),
            ),
            subdir="rec/amazon-beauty",
        ),
        DatasetSource(
            "amazon-sports",
            "Amazon Sports and Outdoors 5-core, S3-Rec preprocessing (sequential recommendation)",
            files=(
                RemoteFile(_S3REC + "Sports_and_Outdoors.txt", "Sports_and_Outdoors.txt",
                           "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2", 1707483),
                RemoteFile(_S3REC + "Sports_and_Outdoors_item2attributes.json",
                           "Sports_and_Outdoors_item2attributes.json",
                           "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b", 653780),
            ),
            subdir="rec/amazon-sports",
        ),
        DatasetSource(
            "homedepot",
            "Home Depot Product Search Relevance (Kaggle 2016), train split (search relevance)",
            manual=(
                "Home Depot data is a Kaggle competition: it needs a Kaggle login and accepting the\n"
                "rules at https://www.kaggle.com/c/home-depot-product-search-relevance/rules. Then either\n"
                "  kaggle competitions download -c home-depot-product-search-relevance -f train.csv.zip\n"
                "or download train.csv.zip from\n"
                "  https://www.kaggle.com/c/home-depot-product-search-relevance/data\n"
                "and place it at {dest}/train.csv.zip (keep it zipped)."
            ),
            subdir="search/homedepot",
        ),
        DatasetSource(
            "esci",
            "Amazon Shopping Queries (ESCI), query-product pairs with E/S/C/I labels",
            manual=(
                "git clone https://github.com/amazon-science/esci-data  (files via git-lfs), then join\n"
                "shopping_queries_dataset_examples.parquet with ..._products.parquet on product_id and\n"
                "product_locale, and save query, product_id, product_title, esci_label as CSV/JSONL in\n"
                "{dest}. Load with Columns(title='product_title', label='esci_label') and label names\n"
                "E/S/C/I -> 3/2/1/0."
            ),
            subdir="search/esci",
        ),
        DatasetSource(
            "wands",
            "Wayfair ANnotation DataSet (WANDS), query-product pairs with Exact/Partial/Irrelevant",
            manual=(
                "git clone https://github.com/wayfair/WANDS, then join dataset/label.csv (tab-separated)\n"
                "with query.csv on query_id and product.csv on product_id, and save query, product_id,\n"
                "product_name, label as CSV/TSV in {dest}. Load with Columns(title='product_name',\n"
                "label='label') and label names Exact/Partial/Irrelevant -> 2/1/0."
            ),
            subdir="search/wands",
        ),
    )
}


def list_sources(registry: dict[str, DatasetSource] = REGISTRY) -> list[dict]:
    """One row per dataset, for a CLI table."""
    rows = []
    for s in registry.values():
        sizes = [f.size for f in s.files]
        rows.append({
            "name": s.name,
            "description": s.description,
            "how": "download" if s.files else "manual",
            "files": len(s.files),
            "bytes": sum(sizes) if s.files and None not in sizes else None,  # type: ignore[arg-type]
            "subdir": s.subdir,
        })
    return rows


def download(
    name: str,
    to: str | Path,
    *,
    registry: dict[str, DatasetSource] = REGISTRY,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
) -> list[Path]:
    """Download dataset ``name`` into ``to/<subdir>``; return the file paths (existing ones are kept)."""
    source = registry.get(name)
    if source is None:
        raise LeanrankError(f"unknown dataset {name!r}; known: {', '.join(sorted(registry))}")
    folder = Path(to) / source.subdir
    if not source.files:
        text = (source.manual or "no download instructions for this dataset").replace("{dest}", str(folder))
        raise ManualDownloadRequired(f"{name} must be downloaded by hand:\n{text}")
    paths = []
    for f in source.files:
        rel = Path(f.filename)
        if rel.is_absolute() or ".." in rel.parts:
            raise LeanrankError(f"{name}: file name {f.filename!r} must be a relative path inside the folder")
        paths.append(download_file(f, folder / rel, progress=progress, timeout=timeout, retries=retries))
    return paths


def download_file(
    f: RemoteFile, dest: Path, *, progress: bool = True, timeout: float = 60, retries: int = 3
) -> Path:
    """Fetch one file to ``dest`` via ``dest.part`` (resumed with Range), verify it, rename atomically.

    ``retries`` is the number of extra attempts after a connection error, truncated body or 5xx.
    """
    dest = Path(dest)
    if dest.exists():
        actual = sha256_of(dest)
        if actual == f.sha256:
            return dest
        raise LeanrankError(
            f"{dest} already exists but its sha256 is {actual}, expected {f.sha256}; "
            "move it away (or delete it) and run the download again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")  # == with_suffix(suffix + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(f, part, timeout=timeout, progress=progress, label=dest.name)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise LeanrankError(f"download failed: {f.url}: HTTP {exc.code} {exc.reason}") from exc
            error: Exception = exc
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            error = exc
        if attempt == retries:
            raise LeanrankError(
                f"download failed after {retries + 1} attempt(s): {f.url}: {error}; "
                f"partial data (if any) is kept in {part}: run again to resume"
            ) from error
        time.sleep(BACKOFF_S * 2**attempt)
    _verify(f, part)
    os.replace(part, dest)
    return dest


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _Truncated(http.client.HTTPException):
    """The server closed the connection before sending the whole body."""


def _fetch(f: RemoteFile, part: Path, *, timeout: float, progress: bool, label: str) -> None:
    """Write the body into ``part``: append after a 206 answering our Range, else start over."""
    offset = part.stat().st_size if part.exists() else 0
    if f.size is not None and offset > f.size:
        part.unlink()
        offset = 0
    if f.size is not None and offset == f.size and offset:
        return  # complete already; verified by the caller
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(f.url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part is complete (or bad)
            exc.close()
            return
        raise
    with resp:
        match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
        if not (offset and resp.status == 206 and match and int(match.group(1)) == offset):
            offset = 0  # no (usable) Range support: restart from zero
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = offset + expected if expected is not None else f.size
        written = 0
        with open(part, "ab" if offset else "wb") as fh, _Bar(progress, label, total, offset) as bar:
            while chunk := resp.read(CHUNK):
                fh.write(chunk)
                written += len(chunk)
                bar.advance(len(chunk))
        if expected is not None and written < expected:
            raise _Truncated(f"connection closed after {offset + written} of {total} bytes")


def _verify(f: RemoteFile, part: Path) -> None:
    """Check sha256 (and size) of the finished ``part``; delete it and raise on mismatch."""
    size, actual = part.stat().st_size, sha256_of(part)
    if actual != f.sha256 or (f.size is not None and size != f.size):
        part.unlink()
        sizes = f" (expected {f.size} bytes, got {size})" if f.size is not None and size != f.size else ""
        raise LeanrankError(
            f"checksum mismatch for {f.filename} ({f.url}): expected sha256 {f.sha256}, "
            f"got {actual}{sizes}; the download was deleted, run again to retry"
        )


class _Bar:
    """A rich progress bar for one file, or a no-op when ``enabled`` is False."""

    def __init__(self, enabled: bool, label: str, total: int | None, done: int):
        self._progress = None
        if enabled:
            rp = require("rich.progress", "rich")
            console = require("rich.console", "rich").Console(stderr=True)
            self._progress = rp.Progress(
                rp.TextColumn("{task.description}"), rp.BarColumn(), rp.DownloadColumn(),
                rp.TransferSpeedColumn(), rp.TimeRemainingColumn(), console=console,
            )
            self._task = self._progress.add_task(label, total=total, completed=done)

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)
