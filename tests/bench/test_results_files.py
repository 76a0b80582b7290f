"""Committed benchmark results follow the shared schema and their bar fields match their rows."""

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FILES = sorted(RESULTS.glob("*.json"))


def committed(name: str, target: str) -> dict:
    """The committed results file ``NAME.json``, or a skip naming the make target that writes it."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path.name} not produced yet ({target})")
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_results_file_schema(path):
    doc = json.loads(path.read_text())
    for key in ("command", "dataset", "split", "machine", "versions", "rows"):
        assert key in doc, f"{path.name} lacks {key}"
    assert path.with_suffix(".md").exists(), "every results file has its .md"
    if doc.get("benchmark") == "serve-loadtest":   # serving under load: latency rows, no ranking quality
        from leanrank.bench.serve_loadtest import bars

        assert doc["bar"] == bars(doc["rows"])
        for row in doc["rows"]:
            assert sum(row["status_counts"].values()) == row["requests"] > 0
            assert row["p50_ms"] <= row["p99_ms"]
        return
    recommendation = doc["dataset"] in ("beauty", "sports")   # full ranking: hr/ndcg, no judged-only NDCG
    for row in doc["rows"]:
        assert row["role"] in {"teacher", "baseline", "variant", "peer", "ablation", "published", "ensemble"}
        assert 0.0 <= row["ndcg@10"] <= row.get("hr@10", 1.0) <= 1.0
        if recommendation:
            assert row["role"] == "published" or row["hr@10"] <= row.get("hr@20", 1.0)
        else:
            assert 0.0 <= row["ndcg@10_judged"] <= 1.0


@pytest.mark.parametrize("name", ["beauty-teacher", "sports-teacher"])
def test_rec_teacher_file_bars_match_rows(name):
    doc = committed(name, "make bench-rec")
    from leanrank.bench.rec import PUBLISHED, bars

    assert doc["bar"] == json.loads(json.dumps(bars(doc["dataset"], doc["rows"])))
    roles = [r["role"] for r in doc["rows"]]
    assert roles.count("teacher") == 1 and roles.count("baseline") == 1
    assert roles.count("published") == len(PUBLISHED[doc["dataset"]])
    assert doc["protocol"]["users"] > 0 and all(r["ndcg@10"] > 0 for r in doc["rows"])


def test_teacher_file_bar_fields_match_rows():
    doc = committed("homedepot-teacher", "make bench")
    rows = {r["name"]: r for r in doc["rows"]}
    teacher = next(r for r in doc["rows"] if r["role"] == "teacher")
    baselines = [r for n, r in rows.items() if "bm25" in n or "dense" in n]
    assert len(baselines) >= 2 and "random" in rows
    best = max(r["ndcg@10"] for r in baselines)
    assert doc["bar"]["teacher_minus_best_baseline_ndcg@10"] == pytest.approx(teacher["ndcg@10"] - best)
    assert doc["bar"]["teacher_rmse"] == pytest.approx(teacher["rmse"])
    precisions = {t["precision"] for t in doc["training"]["throughput"]}
    assert {"fp32", "bf16"} <= precisions


def test_quantize_file_bars_match_rows():
    doc = committed("homedepot-quantize", "make bench-quantize")
    from leanrank.bench.quantize import bars

    assert doc["bar"] == json.loads(json.dumps(bars(doc["rows"])))
    rows = {r["name"]: r for r in doc["rows"]}
    assert {"teacher-fp32", "peer-torch-quantize_dynamic", "peer-ort-quantize_dynamic"} <= set(rows)
    for r in doc["rows"]:
        assert r["speedup"] == pytest.approx(r["pairs_per_s"] / rows["teacher-fp32"]["pairs_per_s"])
        assert r["pairs_per_s_min"] <= r["pairs_per_s"] <= r["pairs_per_s_max"]


def test_prune_file_bars_match_rows():
    doc = committed("homedepot-prune", "make bench-prune")
    from leanrank.bench.prune import bars

    assert doc["bar"] == bars(doc["rows"])
    rows = {r["name"]: r for r in doc["rows"]}
    for criterion in ("magnitude", "taylor", "activation"):     # each criterion before and after tuning
        assert rows[f"struct-{criterion}"]["params"] == rows[f"struct-{criterion}-ft"]["params"]
        assert rows[f"struct-{criterion}"]["params"] < rows["teacher-fp32"]["params"]
    assert rows["unstructured-50-magnitude"]["size_mb"] < rows["teacher-fp32"]["size_mb"]


def test_distill_file_bars_match_rows():
    doc = committed("homedepot-distill", "make bench-distill")
    from leanrank.bench.distill import ABLATION, bars

    assert doc["bar"] == bars(doc["rows"])
    rows = {r["name"]: r for r in doc["rows"]}
    assert {f"ablation-{n}" for n in ABLATION} | {"ablation-multistage"} <= set(rows)
    student, teacher = rows["student-fp32"], rows["teacher-fp32"]
    assert student["params"] < teacher["params"] / 2 and student["flops_per_pair"] < teacher["flops_per_pair"] / 4
    assert rows["student-ort-int8-dynamic"]["size_mb"] < student["size_mb"]
    assert student["distill"]["steps"] == student["steps"]


def test_rec_compress_files_bars_match_rows():
    comp = committed("beauty-compress", "make bench-rec-compress")
    dist = committed("beauty-distill", "make bench-rec-compress")
    lowrank = [r for r in comp["rows"] if "lowrank" in r["name"] and r["table_ratio"] >= 4]
    best = max(lowrank, key=lambda r: r["ndcg_vs_teacher"])
    bar = comp["bar"]["lowrank_table_4x_smaller_at_97pct"]
    assert bar["row"] == best["name"] and bar["met"] == (best["ndcg_vs_teacher"] >= 0.97)
    teacher = dist["rows"][0]
    for row in dist["rows"][1:]:
        assert row["ndcg_vs_teacher"] == pytest.approx(row["ndcg@10"] / teacher["ndcg@10"], abs=1e-4)
        assert row["size_mb"] < teacher["size_mb"]
    assert dist["bar"]["student_10x_smaller_at_97pct"]["met"] is False or \
        dist["bar"]["student_10x_smaller_at_97pct"]["ndcg_vs_teacher"] >= 0.97


@pytest.mark.parametrize("name", ["homedepot-bench", "beauty-bench"])
def test_side_by_side_reports(name):
    """`leanrank bench` reports: one teacher first, every peer present, html + png beside the json,
    speed-ups are the ratio to the teacher's measured rate, and the bars follow from the rows."""
    doc = committed(name, "make bench-report")
    base = RESULTS / name
    assert base.with_suffix(".html").read_text().count("data:image/png;base64,") == 1
    assert base.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    rows = doc["rows"]
    assert rows[0]["role"] == "teacher" and [r["role"] for r in rows].count("teacher") == 1
    rate = "users_per_s" if doc["dataset"] == "beauty" else "pairs_per_s"
    for r in rows:
        assert r["speedup"] == pytest.approx(r[rate] / rows[0][rate])
        assert r[f"{rate}_min"] <= r[rate] <= r[f"{rate}_max"] and r["p50_ms"] <= r["p99_ms"]
    if doc["dataset"] == "homedepot":
        from leanrank.bench.runner import bars

        assert {r["name"] for r in rows if r["role"] == "peer"} == {
            "peer-torch-quantize_dynamic", "peer-ort-quantize_dynamic", "peer-ort-fp32", "peer-bf16-autocast"}
        assert doc["bar"] == json.loads(json.dumps(bars(rows)))
