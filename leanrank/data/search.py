"""Search relevance data: judged (query, product) pairs, a product catalog, query-level splits.

Every loader returns a :class:`SearchDataset`. Raw labels are mapped to graded gains
(``gain = label - label_min`` by default, or an explicit mapping for string labels such as
ESCI's E/S/C/I); the mapping travels with the dataset so reports can say what a gain means.

>>> ds = load_homedepot("../shared/data/search/homedepot")        # doctest: +SKIP
>>> splits = ds.split()                                            # doctest: +SKIP
>>> len(splits["test"].queries())                                  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from leanrank.core.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Judgment:
    """One human judgment: ``label`` is the raw value, ``gain`` the graded gain (>= 0)."""

    query: str
    product_id: str
    label: float
    gain: float


@dataclass(frozen=True)
class LabelMapping:
    """How raw labels become gains; recorded in every dataset and result."""

    label_min: float
    label_max: float
    relevant_min_label: float
    names: Mapping[str, float] | None = None  # string label -> numeric label (ESCI style)

    def gain(self, label: float) -> float:
        return label - self.label_min

    def describe(self) -> dict:
        return {
            "gain": f"label - {self.label_min:g}",
            "label_range": [self.label_min, self.label_max],
            "relevant_min_label": self.relevant_min_label,
            "names": dict(self.names) if self.names else None,
        }


HOMEDEPOT_LABELS = LabelMapping(label_min=1.0, label_max=3.0, relevant_min_label=2.33)


@dataclass
class SearchDataset:
    """Judged query-product pairs plus the catalog (every distinct product, with its title)."""

    name: str
    titles: dict[str, str]
    judgments: list[Judgment]
    labels: LabelMapping
    descriptions: dict[str, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # what loading found: duplicates merged, etc.

    def queries(self) -> list[str]:
        """Distinct queries, in first-seen order."""
        return list(dict.fromkeys(j.query for j in self.judgments))

    def by_query(self) -> dict[str, list[Judgment]]:
        groups: dict[str, list[Judgment]] = defaultdict(list)
        for j in self.judgments:
            groups[j.query].append(j)
        return dict(groups)

    def is_relevant(self, j: Judgment) -> bool:
        return j.label >= self.labels.relevant_min_label - 1e-9

    def sample_pairs(self, n: int, seed: int = 0) -> list[tuple[str, str]]:
        """A seeded sample of ``n`` judged (query, title) pairs (calibration and parity sets)."""
        import random

        pairs = [(j.query, self.titles[j.product_id]) for j in self.judgments]
        return random.Random(seed).sample(pairs, min(n, len(pairs)))

    def subset(self, queries: Iterable[str], name: str | None = None) -> SearchDataset:
        """Same catalog, judgments restricted to ``queries``."""
        keep = set(queries)
        return SearchDataset(
            name=name or self.name,
            titles=self.titles,
            judgments=[j for j in self.judgments if j.query in keep],
            labels=self.labels,
            descriptions=self.descriptions,
            report=self.report,
        )

    def split(
        self, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), salt: str = "leanrank"
    ) -> dict[str, SearchDataset]:
        """Deterministic query-level split by a hash of the normalised query (never by pair)."""
        if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0):
            raise DataError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
        buckets: dict[str, list[str]] = {s: [] for s in SPLITS}
        for q in self.queries():
            buckets[split_of(q, ratios, salt)].append(q)
        return {s: self.subset(qs, name=f"{self.name}:{s}") for s, qs in buckets.items()}

    def label_distribution(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for j in self.judgments:
            counts[f"{j.label:.2f}"] += 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict:
        return {
            "name": self.name,
            "queries": len(self.queries()),
            "products": len(self.titles),
            "judged_products": len({j.product_id for j in self.judgments}),
            "pairs": len(self.judgments),
            "labels": self.label_distribution(),
            "label_mapping": self.labels.describe(),
            **({"load_report": self.report} if self.report else {}),
        }


def normalize_query(q: str) -> str:
    """Lower-case, collapse whitespace: the key used for splitting."""
    return re.sub(r"\s+", " ", q.strip().lower())


def split_of(query: str, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), salt: str = "leanrank") -> str:
    """Which split a query falls in; stable across runs, machines and dataset versions."""
    digest = hashlib.sha1(f"{salt}:{normalize_query(query)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < ratios[0]:
        return "train"
    if u < ratios[0] + ratios[1]:
        return "valid"
    return "test"


# --------------------------------------------------------------------------- loaders


@dataclass(frozen=True)
class Columns:
    """Column names of a generic relevance file."""

    query: str = "query"
    product_id: str = "product_id"
    title: str = "title"
    label: str = "label"
    description: str | None = None


HOMEDEPOT_COLUMNS = Columns(
    query="search_term", product_id="product_uid", title="product_title", label="relevance"
)


def load_homedepot(path: str | Path) -> SearchDataset:
    """Load Kaggle Home Depot ``train.csv`` (ISO-8859-1), from its zip, the csv, or their folder."""
    path = Path(path)
    if path.is_dir():
        for candidate in ("train.csv.zip", "train.csv"):
            if (path / candidate).exists():
                path = path / candidate
                break
        else:
            raise DataError("no train.csv.zip or train.csv in this folder", str(path))
    return load_relevance(
        path, columns=HOMEDEPOT_COLUMNS, labels=HOMEDEPOT_LABELS, encoding="iso-8859-1",
        name="homedepot", member="train.csv",
    )


def load_relevance(
    path: str | Path,
    columns: Columns = Columns(),
    labels: LabelMapping = HOMEDEPOT_LABELS,
    encoding: str = "utf-8",
    name: str | None = None,
    fmt: str | None = None,
    member: str | None = None,
) -> SearchDataset:
    """Load a CSV/TSV/JSONL relevance file (optionally inside a zip) into a SearchDataset.

    Errors name the file and line: missing file or columns, bad encoding, empty or NaN
    query/title, labels outside ``[label_min, label_max]``. Duplicate (query, product) pairs are
    merged by their mean label and counted in ``dataset.report``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", str(path))
    text, inner = _read_text(path, encoding, member)
    fmt = fmt or _guess_format(path, inner)
    rows = _iter_jsonl(text, path) if fmt == "jsonl" else _iter_delimited(text, path, fmt, columns)
    return _build(rows, path, columns, labels, name or path.stem.split(".")[0])


def _read_text(path: Path, encoding: str, member: str | None) -> tuple[str, str | None]:
    """Decoded text (leading BOM dropped) and the zip member it came from (None: a plain file)."""
    inner = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                inner = member if member in names else (names[0] if len(names) == 1 else None)
                if inner is None:
                    raise DataError(f"zip holds {names}; name the member to read", str(path))
                raw = zf.read(inner)
        else:
            raw = path.read_bytes()
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read: {exc}", str(path)) from exc
    try:
        return raw.decode(encoding).removeprefix("\ufeff"), inner
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"not valid {encoding} (byte 0x{raw[exc.start]:02x}); pass the right encoding, "
            "e.g. encoding='iso-8859-1'",
            str(path), line,
        ) from exc


def _guess_format(path: Path, member: str | None) -> str:
    name = (member or path.name).lower().removesuffix(".zip")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    return "csv"


def _iter_delimited(text: str, path: Path, fmt: str, columns: Columns):
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    header = reader.fieldnames or []
    needed = [columns.query, columns.product_id, columns.title, columns.label]
    if columns.description:
        needed.append(columns.description)
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(f"missing column(s) {missing}; header has {header}", str(path), 1)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
            raise DataError(f"malformed {fmt.upper()}: {exc}", str(path), reader.reader.line_num) from exc
        yield reader.line_num, row


def _iter_jsonl(text: str, path: Path):
    # split on "\n" only: str.splitlines() also breaks on U+2028, U+0085, ... which JSON strings may hold
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", str(path), n) from exc
        if not isinstance(obj, dict):
            raise DataError("each JSONL line must be an object", str(path), n)
        yield n, obj


def _clean(value, what: str, path: Path, line: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataError(f"missing {what}", str(path), line)
    text = str(value).strip()
    if not text or text.lower() in {"nan", "null", "none"}:
        raise DataError(f"empty {what}", str(path), line)
    return text


def _parse_label(value, labels: LabelMapping, path: Path, line: int) -> float:
    if labels.names is not None and str(value).strip() in labels.names:
        return float(labels.names[str(value).strip()])
    try:
        label = float(value)
    except (TypeError, ValueError):
        allowed = f" or one of {sorted(labels.names)}" if labels.names else ""
        raise DataError(f"label {value!r} is not a number{allowed}", str(path), line) from None
    if math.isnan(label) or not (labels.label_min - 1e-9 <= label <= labels.label_max + 1e-9):
        raise DataError(
            f"label {value!r} outside [{labels.label_min:g}, {labels.label_max:g}]", str(path), line
        )
    return label


def _build(rows, path: Path, columns: Columns, labels: LabelMapping, name: str) -> SearchDataset:
    titles: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    pair_labels: dict[tuple[str, str], list[float]] = {}
    title_conflicts = 0
    for line, row in rows:
        for col in (columns.query, columns.product_id, columns.title, columns.label):
            if col not in row:
                raise DataError(f"missing field {col!r}", str(path), line)
        query = re.sub(r"\s+", " ", _clean(row[columns.query], "query", path, line))
        pid = _clean(row[columns.product_id], "product id", path, line)
        title = _clean(row[columns.title], "title", path, line)
        label = _parse_label(row[columns.label], labels, path, line)
        if pid in titles and titles[pid] != title:
            title_conflicts += 1
        titles.setdefault(pid, title)
        if columns.description and row.get(columns.description):
            descriptions.setdefault(pid, str(row[columns.description]).strip())
        pair_labels.setdefault((query, pid), []).append(label)
    if not pair_labels:
        raise DataError("no judgments found", str(path))
    duplicates = sum(len(v) - 1 for v in pair_labels.values())
    judgments = []
    for (query, pid), values in pair_labels.items():
        label = sum(values) / len(values)
        judgments.append(Judgment(query, pid, label, labels.gain(label)))
    report = {}
    if duplicates:
        report["duplicate_pairs_merged_by_mean"] = duplicates
    if title_conflicts:
        report["product_ids_with_conflicting_titles_first_kept"] = title_conflicts
    return SearchDataset(name, titles, judgments, labels, descriptions, report)
