"""Sequential-recommendation data: per-user chronological item sequences and a leave-one-out split.

Item ids run 1..n_items (0 is padding). Loaders: the S3-Rec files of Amazon Beauty/Sports
(``load_s3rec``), any interactions CSV/TSV/Parquet with ``user, item, timestamp[, weight]``
columns (``load_interactions``: sorted by time, re-indexed, optional k-core, id maps kept), and
``from_sequences`` for in-memory lists. Syntax errors (malformed lines, non-integer ids) are a
``DataError`` naming file and line; data problems (users with fewer than ``MIN_LENGTH``
interactions, attributes of unknown items, repeated users) are dropped with one counted warning,
or raise with ``strict=True``.

>>> ds = from_sequences([["a", "b", "c", "d"], ["b", "c", "a"]], name="toy")
>>> ds.n_items, ds.split().test_targets.tolist()
(4, [4, 1])
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from leanrank.core.errors import DataError, LeanrankError

MIN_LENGTH = 3  # leave-one-out needs a train item, a validation target and a test target
SEQUENCE_DATASETS = ("beauty", "sports", "synthetic")
S3REC = {"beauty": ("amazon-beauty", "Beauty"), "sports": ("amazon-sports", "Sports_and_Outdoors")}


@dataclass
class SequenceSplit:
    """Leave-one-out: per user, ``train`` = all items but the last two (every prefix's next item is
    a training target), validation target = second-to-last item (history = ``train``), test target
    = last item (history = ``train`` + the validation item)."""

    train: list[np.ndarray]
    valid_targets: np.ndarray
    test_targets: np.ndarray

    def valid_histories(self) -> list[np.ndarray]:
        return self.train

    def test_histories(self) -> list[np.ndarray]:
        return [np.append(h, t) for h, t in zip(self.train, self.valid_targets)]


@dataclass
class SequenceDataset:
    """Chronological item sequences per user, with optional side information and the id maps."""

    name: str
    sequences: list[np.ndarray]              # per user, int64 item ids in 1..n_items
    n_items: int
    item_attributes: list[list[int]] | None = None   # index = item id (row 0 empty); ids >= 1
    titles: list[str] | None = None                  # index = item id (row 0 "")
    user_ids: list[str] = field(default_factory=list)   # original id of each user row
    item_ids: list[str] = field(default_factory=list)   # original id of each item index (0: "")
    weights: list[np.ndarray] | None = None          # optional interaction weights, aligned
    report: dict = field(default_factory=dict)       # what loading dropped or warned about

    @property
    def n_attributes(self) -> int:
        """Attribute vocabulary size (max id + 1; id 0 is padding); 0 without attributes."""
        top = max((max(a) for a in self.item_attributes or () if a), default=0)
        return top + 1 if top else 0

    def split(self) -> SequenceSplit:
        return SequenceSplit(train=[s[:-2] for s in self.sequences],
                             valid_targets=np.array([s[-2] for s in self.sequences], dtype=np.int64),
                             test_targets=np.array([s[-1] for s in self.sequences], dtype=np.int64))

    def original_items(self, ids: Sequence[int]) -> list[str]:
        """Internal item ids → the ids of the source data."""
        return [self.item_ids[i] for i in ids]

    def summary(self) -> dict:
        n = sum(len(s) for s in self.sequences)
        return {"name": self.name, "users": len(self.sequences), "items": self.n_items, "interactions": n,
                "mean_length": round(n / max(len(self.sequences), 1), 2), "attributes": self.n_attributes,
                "titles": self.titles is not None, **({"load_report": self.report} if self.report else {})}


# --------------------------------------------------------------------------- S3-Rec files


def load_s3rec(directory: str | Path, stem: str, name: str | None = None, strict: bool = False) -> SequenceDataset:
    """``STEM.txt`` (``user item item ...``, ids from 1), ``STEM_item2attributes.json`` and the
    optional ``STEM.item`` titles, as in the S3-Rec repository."""
    directory = Path(directory)
    path = directory / f"{stem}.txt"
    if not path.is_file():
        raise DataError("file not found", str(path))
    issues = _Issues(strict)
    users, seqs, seen = [], [], {}
    for n, line in enumerate(_read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"malformed line: need 'user item [item ...]', got {line.strip()!r}", str(path), n)
        ids = [_int(p, "id", path, n) for p in parts]
        if any(i < 1 for i in ids[1:]):
            raise DataError("item ids must be >= 1 (0 is padding)", str(path), n)
        if parts[0] in seen:
            issues.add("repeated_users_dropped", f"user {parts[0]} repeats line {seen[parts[0]]}", path, n)
            continue
        seen[parts[0]] = n
        if len(ids) - 1 < MIN_LENGTH:
            issues.add("short_users_dropped", f"user {parts[0]} has {len(ids) - 1} interactions "
                       f"(< {MIN_LENGTH})", path, n)
            continue
        users.append(parts[0])
        seqs.append(np.array(ids[1:], dtype=np.int64))
    if not seqs:
        raise DataError("no user with enough interactions", str(path))
    n_items = int(max(s.max() for s in seqs))
    attributes = _s3rec_attributes(directory / f"{stem}_item2attributes.json", n_items, issues)
    titles = _s3rec_titles(directory / f"{stem}.item", n_items, issues)
    ds = SequenceDataset(name or stem.lower(), seqs, n_items, attributes, titles, users,
                         [""] + [str(i) for i in range(1, n_items + 1)], report=issues.counts)
    issues.warn(name or stem)
    return ds


def _s3rec_attributes(path: Path, n_items: int, issues: _Issues) -> list[list[int]] | None:
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg}", str(path), exc.lineno) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read: {exc}", str(path)) from exc
    if not isinstance(raw, dict):
        raise DataError("expected an object {item id: [attribute ids]}", str(path))
    table: list[list[int]] = [[] for _ in range(n_items + 1)]
    for key, values in raw.items():
        item = _int(key, "item id", path, 1)
        if not isinstance(values, list) or not all(isinstance(v, int) and v >= 1 for v in values):
            raise DataError(f"item {key}: attributes must be a list of integer ids >= 1", str(path), 1)
        if not 1 <= item <= n_items:
            issues.add("attributes_of_unknown_items", f"item {key} is not in the sequences", path, 1)
            continue
        table[item] = list(values)
    return table


def _s3rec_titles(path: Path, n_items: int, issues: _Issues) -> list[str] | None:
    if not path.is_file():
        return None
    titles = [""] * (n_items + 1)
    lines = _read_lines(path)
    if not lines or not lines[0].startswith("item_id"):
        raise DataError("header must start with 'item_id:token'", str(path), 1)
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        item = _int(parts[0], "item id", path, n)
        if not 1 <= item <= n_items:
            issues.add("titles_of_unknown_items", f"item {item} is not in the sequences", path, n)
            continue
        titles[item] = parts[1].strip() if len(parts) > 1 else ""
    return titles


# --------------------------------------------------------------------------- interactions files


@dataclass(frozen=True)
class InteractionColumns:
    """Column names of an interactions file; ``weight`` is optional."""

    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    weight: str | None = None


def load_interactions(
    path: str | Path,
    columns: InteractionColumns = InteractionColumns(),
    k_core: int = 0,
    name: str | None = None,
    strict: bool = False,
    fmt: str | None = None,
) -> SequenceDataset:
    """A CSV/TSV/Parquet interactions file → sequences sorted by time (ties keep file order),
    ids re-indexed to 1..N in first-seen order; ``k_core`` repeatedly drops users and items with
    fewer interactions. ``dataset.user_ids`` / ``item_ids`` map back to the file's own ids.

    Timestamps may be numbers or ISO-8601 strings.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", str(path))
    fmt = fmt or {".parquet": "parquet", ".tsv": "tsv", ".tab": "tsv"}.get(path.suffix.lower(), "csv")
    rows = _parquet_rows(path, columns) if fmt == "parquet" else _delimited_rows(path, columns, fmt)
    issues = _Issues(strict)
    events: dict[str, list[tuple[float, int, str, float]]] = {}
    for order, (n, user, item, ts, weight) in enumerate(rows):
        if not user or not item:
            raise DataError("empty user or item id", str(path), n)
        events.setdefault(user, []).append((_time(ts, path, n), order, item, _weight(weight, path, n)))
    if not events:
        raise DataError("no interactions found", str(path))
    for evs in events.values():
        evs.sort()
    dropped = _k_core(events, k_core)
    for user in [u for u, evs in events.items() if len(evs) < MIN_LENGTH]:
        issues.add("short_users_dropped", f"user {user} has {len(events.pop(user))} interactions "
                   f"(< {MIN_LENGTH})", path, None)
    if not events:
        raise DataError(f"no user with >= {MIN_LENGTH} interactions left", str(path))
    ds = _index([[e[2] for e in evs] for evs in events.values()], list(events), name or path.stem)
    if columns.weight:
        ds.weights = [np.array([e[3] for e in evs], dtype=np.float32) for evs in events.values()]
    ds.report = {**({"k_core_users_dropped": dropped} if dropped else {}), **issues.counts}
    issues.warn(str(path))
    return ds


def _delimited_rows(path: Path, columns: InteractionColumns, fmt: str):
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        header = reader.fieldnames or []
        needed = [columns.user, columns.item, columns.timestamp] + ([columns.weight] if columns.weight else [])
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(f"missing column(s) {missing}; header has {header}", str(path), 1)
        try:
            for row in reader:
                if None in row or any(row[c] is None for c in needed):
                    raise DataError("malformed line: wrong number of fields", str(path), reader.line_num)
                yield (reader.line_num, row[columns.user].strip(), row[columns.item].strip(),
                       row[columns.timestamp], row[columns.weight] if columns.weight else None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"malformed {fmt.upper()}: {exc}", str(path), reader.line_num) from exc


def _parquet_rows(path: Path, columns: InteractionColumns):
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except ImportError as exc:
        raise LeanrankError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from exc
    except Exception as exc:  # each engine raises its own types for a corrupt file
        raise DataError(f"cannot read Parquet: {type(exc).__name__}: {exc}", str(path)) from exc
    needed = [columns.user, columns.item, columns.timestamp] + ([columns.weight] if columns.weight else [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; columns are {list(df.columns)}", str(path))
    weights = df[columns.weight] if columns.weight else [None] * len(df)
    for n, (u, i, t, w) in enumerate(zip(df[columns.user], df[columns.item], df[columns.timestamp], weights)):
        yield n + 1, str(u).strip(), str(i).strip(), t, w  # "line" = 1-based row number


def _time(value, path: Path, line: int) -> float:
    if hasattr(value, "timestamp"):  # pandas / datetime values
        return float(value.timestamp())
    try:
        t = float(value)
    except (TypeError, ValueError):
        try:
            return datetime.fromisoformat(str(value).strip()).timestamp()
        except ValueError:
            raise DataError(f"timestamp {value!r} is neither a number nor ISO-8601", str(path), line) from None
    if math.isnan(t):
        raise DataError("missing timestamp", str(path), line)
    return t


def _weight(value, path: Path, line: int) -> float:
    if value is None:
        return 1.0
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise DataError(f"weight {value!r} is not a number", str(path), line) from None
    if not math.isfinite(w):
        raise DataError(f"weight {value!r} is not finite", str(path), line)
    return w


def _k_core(events: dict[str, list], k: int) -> int:
    """Drop users and items with < k interactions until none is left; returns users dropped."""
    if k <= 1:
        return 0
    before = len(events)
    while True:
        counts = Counter(e[2] for evs in events.values() for e in evs)
        changed = False
        for user in list(events):
            kept = [e for e in events[user] if counts[e[2]] >= k]
            if len(kept) != len(events[user]):
                events[user], changed = kept, True
            if len(kept) < k:
                del events[user]
                changed = True
        if not changed:
            return before - len(events)


# --------------------------------------------------------------------------- in memory, by name


def from_sequences(
    sequences: Sequence[Sequence[str]],
    name: str = "sequences",
    user_ids: Sequence[str] | None = None,
    item_attributes: dict[str, Sequence[str]] | None = None,
    titles: dict[str, str] | None = None,
    strict: bool = False,
) -> SequenceDataset:
    """Chronological item-id lists (any hashable ids) → a re-indexed SequenceDataset.

    ``item_attributes`` (item → attribute names) and ``titles`` (item → title) are re-indexed too.
    """
    issues = _Issues(strict)
    users = [str(u) for u in user_ids] if user_ids is not None else [str(i) for i in range(len(sequences))]
    keep = []
    for u, s in zip(users, sequences):
        if len(s) < MIN_LENGTH:
            issues.add("short_users_dropped", f"user {u} has {len(s)} interactions (< {MIN_LENGTH})", None, None)
        else:
            keep.append((u, s))
    if not keep:
        raise LeanrankError(f"{name}: no user with >= {MIN_LENGTH} interactions")
    ds = _index([[str(i) for i in s] for _, s in keep], [u for u, _ in keep], name)
    if item_attributes is not None:
        vocab: dict[str, int] = {}
        ds.item_attributes = [[] for _ in range(ds.n_items + 1)]
        for i, item in enumerate(ds.item_ids[1:], start=1):
            ds.item_attributes[i] = [vocab.setdefault(a, len(vocab) + 1) for a in item_attributes.get(item, ())]
    if titles is not None:
        ds.titles = [""] + [titles.get(item, "") for item in ds.item_ids[1:]]
    ds.report = issues.counts
    issues.warn(name)
    return ds


def load_sequence_dataset(name: str, data_dir: str | Path | None = None, strict: bool = False) -> SequenceDataset:
    """``beauty`` / ``sports`` (S3-Rec files under DATA/rec/), ``synthetic`` (the embedded catalog's
    sessions, with category/brand/attribute side information and titles), or an interactions file."""
    if name == "synthetic":
        from leanrank.data.synthetic import make_catalog

        cat = make_catalog()
        attrs = {p["id"]: [f"category={p['category']}", f"brand={p['brand']}"]
                 + [f"{k}={v}" for k, v in sorted(p.get("attributes", {}).items())] for p in cat.products}
        return from_sequences(cat.sessions, "synthetic", item_attributes=attrs,
                              titles={p["id"]: p["title"] for p in cat.products}, strict=strict)
    if name in S3REC:
        from leanrank.data.registry import resolve_data_dir

        folder, stem = S3REC[name]
        return load_s3rec(resolve_data_dir(data_dir) / "rec" / folder, stem, name=name, strict=strict)
    if Path(name).suffix and Path(name).is_file():
        return load_interactions(name, strict=strict)
    raise LeanrankError(f"unknown dataset {name!r}; choose one of {', '.join(SEQUENCE_DATASETS)} or a file path")


# --------------------------------------------------------------------------- helpers


class _Issues:
    """Counted data problems: one warning at the end, or an error at the first when strict."""

    def __init__(self, strict: bool):
        self.strict, self.counts, self.first = strict, {}, {}

    def add(self, kind: str, message: str, path, line: int | None) -> None:
        if self.strict:
            if path is None:
                raise LeanrankError(f"{message} (strict)")
            raise DataError(f"{message} (strict)", str(path), line)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        where = f"{path}:{line}: " if path is not None and line is not None else ""
        self.first.setdefault(kind, f"{where}{message}")

    def warn(self, source: str) -> None:
        if self.counts:
            detail = "; ".join(f"{k}={v} (first: {self.first.get(k, '-')})" for k, v in self.counts.items())
            warnings.warn(f"{source}: {detail}; pass strict=True to make this an error", stacklevel=3)


def _index(seqs: list[list[str]], users: list[str], name: str) -> SequenceDataset:
    ids: dict[str, int] = {}
    arrays = [np.array([ids.setdefault(i, len(ids) + 1) for i in s], dtype=np.int64) for s in seqs]
    return SequenceDataset(name, arrays, len(ids), user_ids=users, item_ids=[""] + list(ids))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").removeprefix("\ufeff").split("\n")
    except UnicodeDecodeError as exc:
        raw = path.read_bytes()
        raise DataError("not valid UTF-8", str(path), raw[: exc.start].count(b"\n") + 1) from exc


def _int(text: str, what: str, path: Path, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{what} {text!r} is not an integer", str(path), line) from None
