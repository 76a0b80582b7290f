"""Committed benchmark results follow the shared schema and their bar fields match their rows."""

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FILES = sorted(RESULTS.glob("*.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_results_file_schema(path):
    doc = json.loads(path.read_text())
    for key in ("command", "dataset", "split", "machine", "versions", "rows"):
        assert key in doc, f"{path.name} lacks {key}"
    assert path.with_suffix(".md").exists(), "every results file has its .md"
    for row in doc["rows"]:
        assert row["role"] in {"teacher", "baseline", "variant", "peer", "ablation"}  # ablation: one switch each
        assert 0.0 <= row["ndcg@10"] <= 1.0
        assert 0.0 <= row["ndcg@10_judged"] <= 1.0


def test_teacher_file_bar_fields_match_rows():
    path = RESULTS / "homedepot-teacher.json"
    if not path.exists():
        pytest.skip("homedepot-teacher.json not produced yet (make bench)")
    doc = json.loads(path.read_text())
    rows = {r["name"]: r for r in doc["rows"]}
    teacher = next(r for r in doc["rows"] if r["role"] == "teacher")
    baselines = [r for n, r in rows.items() if "bm25" in n or "dense" in n]
    assert len(baselines) >= 2 and "random" in rows
    best = max(r["ndcg@10"] for r in baselines)
    assert doc["bar"]["teacher_minus_best_baseline_ndcg@10"] == pytest.approx(teacher["ndcg@10"] - best)
    assert doc["bar"]["teacher_rmse"] == pytest.approx(teacher["rmse"])
    precisions = {t["precision"] for t in doc["training"]["throughput"]}
    assert {"fp32", "bf16"} <= precisions


def test_prune_file_bars_match_rows():
    path = RESULTS / "homedepot-prune.json"
    if not path.exists():
        pytest.skip("homedepot-prune.json not produced yet (make bench-prune)")
    from leanrank.bench.prune import bars

    doc = json.loads(path.read_text())
    assert doc["bar"] == bars(doc["rows"])
    rows = {r["name"]: r for r in doc["rows"]}
    for criterion in ("magnitude", "taylor", "activation"):     # each criterion before and after tuning
        assert rows[f"struct-{criterion}"]["params"] == rows[f"struct-{criterion}-ft"]["params"]
        assert rows[f"struct-{criterion}"]["params"] < rows["teacher-fp32"]["params"]
    assert rows["unstructured-50-magnitude"]["size_mb"] < rows["teacher-fp32"]["size_mb"]


def test_distill_file_bars_match_rows():
    path = RESULTS / "homedepot-distill.json"
    if not path.exists():
        pytest.skip("homedepot-distill.json not produced yet (make bench-distill)")
    from leanrank.bench.distill import ABLATION, bars

    doc = json.loads(path.read_text())
    assert doc["bar"] == bars(doc["rows"])
    rows = {r["name"]: r for r in doc["rows"]}
    assert {f"ablation-{n}" for n in ABLATION} | {"ablation-multistage"} <= set(rows)
    student, teacher = rows["student-fp32"], rows["teacher-fp32"]
    assert student["params"] < teacher["params"] / 2 and student["flops_per_pair"] < teacher["flops_per_pair"] / 4
    assert rows["student-ort-int8-dynamic"]["size_mb"] < student["size_mb"]
    assert student["distill"]["steps"] == student["steps"]
