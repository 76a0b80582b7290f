"""Rich tables for ``leanrank data info`` and ``leanrank data sources`` (no torch import here)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leanrank.core.errors import LeanrankError
from leanrank.data.registry import DATA_ENV, load_search_dataset, resolve_data_dir
from leanrank.data.search import SPLITS, SearchDataset


def print_data_info(dataset: str, data_dir: str | Path | None, console: Console | None = None) -> None:
    """Describe ``dataset`` (or, for ``all``, every dataset found) split by split."""
    console = console or Console()
    if dataset != "all":
        _print_search(load_search_dataset(dataset, data_dir), console)
        return
    # resolve first so that a bad --data-dir fails before anything is printed
    root = resolve_data_dir(data_dir) if data_dir or os.environ.get(DATA_ENV) else None
    _print_search(load_search_dataset("synthetic"), console)
    if root is None:
        console.print(f"hint: pass --data-dir DIR or set {DATA_ENV} to also show homedepot and rec data")
        return
    if (root / "search" / "homedepot").is_dir():
        _print_search(load_search_dataset("homedepot", root), console)
    else:
        console.print(f"homedepot: not found under {root / 'search' / 'homedepot'} "
                      "(see `leanrank data download homedepot --to DIR`)", markup=False)
    _print_rec_files(root, console)


def _print_search(ds: SearchDataset, console: Console) -> None:
    splits = ds.split()
    table = Table(title=f"search dataset: {escape(ds.name)}")
    table.add_column("split")
    for col in ("queries", "products in catalog", "judged products", "pairs"):
        table.add_column(col, justify="right")
    for name, part in [*((s, splits[s]) for s in SPLITS), ("all", ds)]:
        table.add_row(name, f"{len(part.queries()):,}", f"{len(part.titles):,}",
                      f"{len({j.product_id for j in part.judgments}):,}", f"{len(part.judgments):,}",
                      end_section=name == SPLITS[-1])
    console.print(table)

    dist = ds.label_distribution()
    total = sum(dist.values()) or 1
    mapping = ds.labels.describe()
    labels = Table(title=f"{escape(ds.name)}: label distribution")
    labels.add_column("label", justify="right")
    labels.add_column("gain", justify="right")
    labels.add_column("count", justify="right")
    labels.add_column("%", justify="right")
    for label, count in dist.items():
        labels.add_row(label, f"{ds.labels.gain(float(label)):.2f}", f"{count:,}", f"{100 * count / total:.1f}")
    console.print(labels)
    lo, hi = mapping["label_range"]
    line = (f"label mapping: gain = {mapping['gain']}, label range [{lo:g}, {hi:g}], "
            f"relevant if label >= {mapping['relevant_min_label']:g}")
    if mapping["names"]:
        line += "; names " + ", ".join(f"{k}={v:g}" for k, v in mapping["names"].items())
    console.print(line, markup=False)
    if ds.report:
        console.print("load report: " + ", ".join(f"{k}={v}" for k, v in ds.report.items()), markup=False)
    else:
        console.print("load report: no duplicates merged, no conflicting titles")
    console.print()


def _print_rec_files(root: Path, console: Console) -> None:
    rec = root / "rec"
    folders = sorted(p for p in rec.glob("*") if p.is_dir()) if rec.is_dir() else []
    if not folders:
        console.print(f"rec: no datasets under {rec} (see `leanrank data sources`)", markup=False)
        return
    table = Table(title=f"rec files under {escape(str(rec))}")
    table.add_column("dataset")
    table.add_column("file", overflow="fold")
    table.add_column("lines", justify="right")
    table.add_column("bytes", justify="right")
    for folder in folders:
        for f in sorted(p for p in folder.iterdir() if p.is_file()):
            lines = f"{_count_lines(f):,}" if f.suffix == ".txt" else ""
            table.add_row(escape(folder.name), escape(f.name), lines, f"{f.stat().st_size:,}")
    console.print(table)


def _count_lines(path: Path) -> int:
    n, last = 0, b"\n"
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise LeanrankError(f"{path}: cannot read: {exc}") from exc
    return n + (last != b"\n")  # a last line without a newline still counts


def print_sources(console: Console | None = None) -> None:
    """Table of the datasets ``leanrank data download`` knows."""
    from leanrank.data.download import list_sources

    console = console or Console()
    table = Table(title="datasets for `leanrank data download NAME --to DIR`")
    table.add_column("dataset", ratio=1)
    table.add_column("how", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("folder", no_wrap=True)
    for row in list_sources():
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "-"
        table.add_row(f"[bold]{row['name']}[/bold]\n[dim]{escape(row['description'])}[/dim]",
                      row["how"], size, row["subdir"] or ".", end_section=True)
    console.print(table)


BENCH_COLUMNS = ("name", "role", "ndcg@10", "ndcg_vs_teacher", "hr@10", "pairs_per_s", "users_per_s", "speedup",
                 "p50_ms", "p99_ms", "size_mb", "peak_rss_mb")


def print_bench(doc: dict, console: Console | None = None) -> None:
    """The main columns of a ``leanrank bench`` results doc as a rich table."""
    console = console or Console()
    rows = doc["rows"]
    cols = [c for c in BENCH_COLUMNS if any(r.get(c) is not None for r in rows)]
    table = Table(title=f"{escape(str(doc.get('dataset')))} — {escape(str(doc.get('split')))}")
    for c in cols:
        table.add_column(c, justify="left" if c in ("name", "role") else "right")
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in cols))
    console.print(table)
    for k, v in (doc.get("bar") or {}).items():
        console.print(f"{k}: {_cell(v)}", markup=False)


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    return escape(str(v))
