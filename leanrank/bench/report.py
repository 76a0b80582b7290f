"""Results files: ``NAME.json`` (the shared schema) and a ``NAME.md`` a person can read."""

from __future__ import annotations

from pathlib import Path

from leanrank.core.io import write_json, write_text

COLUMNS = ("name", "role", "ndcg@10", "ndcg@10_ci95", "ndcg@10_judged", "mrr@10", "recall@100",
           "rmse", "pairs_per_s", "p50_ms", "p99_ms", "size_mb", "params")


def write_results(out_stem: str | Path, doc: dict) -> tuple[Path, Path]:
    """Write ``out_stem.json`` and ``out_stem.md``; both atomically."""
    stem = Path(out_stem)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    write_json(json_path, doc)
    write_text(md_path, to_markdown(doc, json_path.name))
    return json_path, md_path


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict], columns=COLUMNS) -> str:
    cols = [c for c in columns if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(doc: dict, json_name: str) -> str:
    parts = [f"# {doc.get('dataset', '')} — {doc.get('split', '')} split", "",
             f"Made by: `{doc.get('command', '')}`  (data: `{json_name}`)", "",
             table(doc["rows"], doc.get("columns", COLUMNS)), ""]
    if doc.get("notes"):
        parts += ["## Notes", "", *(f"- {n}" for n in doc["notes"]), ""]
    if "protocol" in doc:
        parts += ["## Protocol", "", *(f"- {k}: {v}" for k, v in doc["protocol"].items()), ""]
    if "bar" in doc:
        parts += ["## Bars", "", *(f"- {k}: {_fmt(v)}" for k, v in doc["bar"].items()), ""]
    if "significance" in doc:
        parts += ["## Paired t-test on per-query NDCG@10", "",
                  *(f"- {k}: mean diff {_fmt(v['mean_diff'])}, p = {v['p_value']:.2e}, n = {v['n']}"
                    for k, v in doc["significance"].items()), ""]
    training = doc.get("training", {})
    if training.get("throughput"):
        parts += ["## Training throughput (same run, batch 32, forward+backward+AdamW)", "",
                  table(training["throughput"], ("precision", "pairs_per_s", "pairs_per_s_min",
                                                 "pairs_per_s_max", "steps")), ""]
    if training.get("teacher_run"):
        tr = training["teacher_run"]
        parts += ["## Teacher training run", "",
                  f"- steps {tr.get('steps')}, pairs {tr.get('train_pairs')}, seconds {tr.get('train_seconds')}, "
                  f"pairs/s {_fmt(tr.get('train_pairs_per_s'))}, best valid NDCG@10 {_fmt(tr.get('best_ndcg@10'))} "
                  f"at step {tr.get('best_step')}", ""]
    m = doc.get("machine", {})
    parts += ["## Machine and versions", "", f"- {m.get('cpu')} × {m.get('cpus')} CPUs, torch threads "
              f"{m.get('torch_threads')}, {m.get('platform')}",
              "- " + ", ".join(f"{k} {v}" for k, v in doc.get("versions", {}).items()), ""]
    if "seconds" in doc:
        parts.append(f"Run time: {doc['seconds']:.0f} s")
    return "\n".join(parts) + "\n"
