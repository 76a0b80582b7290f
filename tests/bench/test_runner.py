"""`leanrank bench`: teacher, variants, peers and ensembles side by side on the synthetic catalog."""

from __future__ import annotations

import copy
import json

import pytest

from leanrank.core.errors import LeanrankError

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            vocab_size=30522, max_position_embeddings=64)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, one_thread):
    import torch
    from transformers import BertConfig

    from leanrank.compress.quantize import make_config, quantize_
    from leanrank.compress.students import StudentConfig, make_student
    from leanrank.models.cross_encoder import CrossEncoder

    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    teacher = CrossEncoder.from_config(BertConfig(**TINY))
    teacher.save(root / "teacher")
    q = copy.deepcopy(teacher)
    quantize_(q, make_config("int8-dynamic"))
    q.save(root / "teacher-int8")
    make_student(teacher, StudentConfig(num_layers=1)).save(root / "student-1l")
    return root


def test_bench_rows_peers_ensembles_and_report(folders, tmp_path):
    from leanrank.bench.runner import bench_models

    out = tmp_path / "report"
    doc = bench_models([folders / "teacher", folders / "teacher-int8", folders / "student-1l"],
                       dataset="synthetic", data_dir=None, out_dir=out, peers=["torch-dynamic", "ort-fp32"],
                       max_queries=12, slow_queries=4, repeats=1, ensembles=["mean", "weighted"],
                       valid_queries=10, rss=False, name="hd-bench", log=lambda _m: None)
    rows = {r["name"]: r for r in doc["rows"]}
    assert list(rows)[0] == "teacher-fp32" and rows["teacher-fp32"]["ndcg_vs_teacher"] == 1.0
    assert {"peer-torch-quantize_dynamic", "peer-ort-fp32", "teacher-int8", "student-1l",
            "ensemble-mean", "ensemble-weighted"} <= set(rows)
    # the fp32 ONNX Runtime peer is the teacher's graph: same ranking quality
    assert rows["peer-ort-fp32"]["ndcg@10"] == pytest.approx(rows["teacher-fp32"]["ndcg@10"], abs=1e-3)
    assert rows["peer-ort-fp32"]["spearman_vs_teacher"] > 0.999
    for r in rows.values():
        assert r["pairs_per_s"] > 0 and r["pairs_per_s_b1"] > 0 and r["p50_ms"] <= r["p99_ms"]
        lo, hi = r["ndcg@10_ci95"]
        assert lo <= r["ndcg@10"] <= hi
    # sizes: int8 weights are smaller on disk than the fp32 teacher; a 1-layer student has fewer params
    assert rows["teacher-int8"]["size_mb"] < rows["teacher-fp32"]["size_mb"]
    assert rows["student-1l"]["params"] < rows["teacher-fp32"]["params"]
    assert rows["student-1l"]["flops_per_pair"] < rows["teacher-fp32"]["flops_per_pair"]
    assert "flops_per_pair" not in rows["teacher-int8"]      # the flop counter cannot see int8 kernels
    w = rows["ensemble-weighted"]["weights"]
    assert set(w) == {"teacher-int8", "student-1l"} and sum(w.values()) == pytest.approx(1.0)
    assert rows["ensemble-mean"]["size_mb"] == pytest.approx(
        rows["teacher-int8"]["size_mb"] + rows["student-1l"]["size_mb"], abs=0.02)
    assert "ndcg_gain_vs_best_member" in rows["ensemble-mean"]
    assert set(doc["bar"]) >= {"best_peer", "throughput_vs_best_peer", "speedup_at_98pct_teacher"}
    assert sorted(p.name for p in out.glob("hd-bench.*")) == ["hd-bench.html", "hd-bench.json", "hd-bench.md",
                                                              "hd-bench.png"]
    saved = json.loads((out / "hd-bench.json").read_text())
    assert [r["name"] for r in saved["rows"]] == list(rows)
    html = (out / "hd-bench.html").read_text()
    assert "data:image/png;base64," in html and "ensemble-weighted" in html
    assert (out / "hd-bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## " in (out / "hd-bench.md").read_text()


def test_bench_refuses_bad_input(folders, tmp_path):
    from leanrank.bench.runner import bench_models

    with pytest.raises(LeanrankError, match="unknown peer 'tensorrt'"):
        bench_models([folders / "teacher"], dataset="synthetic", data_dir=None, out_dir=tmp_path,
                     peers=["tensorrt"], rss=False, log=lambda _m: None)
    with pytest.raises(LeanrankError, match="not a model folder"):
        bench_models([tmp_path], dataset="synthetic", data_dir=None, out_dir=tmp_path / "o", log=lambda _m: None)
    with pytest.raises(LeanrankError, match="ensembles need >= 2 members"):
        bench_models([folders / "teacher", folders / "student-1l"], dataset="synthetic", data_dir=None,
                     out_dir=tmp_path / "o2", peers=[], max_queries=5, repeats=1, ensembles=["mean"], rss=False,
                     log=lambda _m: None)


def test_bars_from_rows():
    from leanrank.bench.runner import bars

    rows = [{"name": "t", "role": "teacher", "ndcg@10": 0.5, "pairs_per_s": 100, "speedup": 1.0,
             "ndcg_vs_teacher": 1.0, "quality_queries": 10},
            {"name": "p", "role": "peer", "ndcg@10": 0.49, "pairs_per_s": 160, "quality_queries": 10},
            {"name": "fast-bad", "role": "variant", "ndcg@10": 0.40, "pairs_per_s": 2000, "speedup": 20.0,
             "ndcg_vs_teacher": 0.8, "quality_queries": 10},
            {"name": "good", "role": "variant", "ndcg@10": 0.495, "pairs_per_s": 640, "speedup": 6.4,
             "ndcg_vs_teacher": 0.99, "quality_queries": 10}]
    b = bars(rows)
    assert b["best_peer"] == "p" and b["best_at_or_above_peer_ndcg"] == "good"
    assert b["throughput_vs_best_peer"] == pytest.approx(4.0)
    assert b["best_at_98pct_teacher"] == "good" and b["speedup_at_98pct_teacher"] == 6.4
