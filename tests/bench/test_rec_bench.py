"""``leanrank.bench.rec``: the results file of the sequential benchmark (teacher, peer, baseline,
published rows) and its bars, on the embedded synthetic sessions without the RecBole peer."""

from __future__ import annotations

import json

from leanrank.bench.rec import COLUMNS, bars, peer_row, published_rows, run

PEER_RESULT = {"name": "RecBole 1.2.1 SASRec (CE)", "hr@5": 0.02, "ndcg@5": 0.012, "hr@10": 0.03, "ndcg@10": 0.015,
               "hr@20": 0.05, "ndcg@20": 0.02, "valid": {"ndcg@10": 0.02}, "params": 100, "size_mb": 0.4,
               "train_minutes": 3.0, "epochs_done": 2, "epoch_cap_reason": "time budget",
               "recbole_stock": {"test": {"ndcg@10": 0.014}}}


def test_peer_row_keeps_our_protocol_numbers_and_the_stock_ones():
    row = peer_row(PEER_RESULT)
    assert row["role"] == "peer" and row["ndcg@10"] == 0.015 and row["recbole_stock_ndcg@10"] == 0.014
    assert row["epochs"] == 2 and row["stopped_by"] == "time budget" and row["valid_ndcg@10"] == 0.02


def test_bars_compare_teacher_with_threshold_peer_and_time():
    teacher = {"role": "teacher", "ndcg@10": 0.046, "train_minutes": 20.0}
    got = bars("beauty", [teacher, peer_row(PEER_RESULT)])
    assert got["teacher_test_ndcg@10_ge_0.045"]["met"] and got["teacher_beats_recbole_peer"]["met"]
    assert got["teacher_trained_under_45_min"]["met"]
    slow_weak = {"role": "teacher", "ndcg@10": 0.010, "train_minutes": 50.0}
    got = bars("sports", [slow_weak, peer_row(PEER_RESULT)])
    assert not got["teacher_test_ndcg@10_ge_0.024"]["met"] and not got["teacher_beats_recbole_peer"]["met"]
    assert not got["teacher_trained_under_45_min"]["met"]
    assert bars("sports", [slow_weak])["teacher_beats_recbole_peer"] is None


def test_published_rows_are_the_s3rec_table():
    rows = {r["name"].split(" ")[0]: r for r in published_rows("sports")}
    assert rows["SASRec"]["ndcg@10"] == 0.0192 and rows["S3-Rec"]["hr@10"] == 0.0385
    assert all(r["role"] == "published" for r in rows.values())
    assert published_rows("synthetic") == []


def test_run_writes_teacher_and_baseline_rows(tmp_path, one_thread):
    spec = {"model": {"hidden": 32, "layers": 1, "heads": 2, "max_len": 20, "dropout": 0.1}, "titles": False,
            "train": {"lr": 3e-3, "batch_size": 64, "max_steps": 60}}
    doc = run("synthetic", None, tmp_path / "synthetic-teacher", tmp_path / "work", minutes=2.0, peer=False,
              valid_users=200, spec=spec, log=lambda s: None)
    saved = json.loads((tmp_path / "synthetic-teacher.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(doc["rows"]))
    roles = [r["role"] for r in doc["rows"]]
    assert roles == ["teacher", "baseline"]
    teacher, pop = doc["rows"]
    for row in (teacher, pop):
        assert all(0.0 <= row[k] <= 1.0 for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20"))
        assert row["hr@10"] <= row["hr@20"] and row["ndcg@10"] <= row["hr@10"]
    assert teacher["ndcg@10"] > pop["ndcg@10"]  # 60 steps learn the synthetic sessions' structure
    assert teacher["params"] > 0 and teacher["size_mb"] > 0 and teacher["train_minutes"] < 2.0
    assert doc["bar"]["teacher_beats_recbole_peer"] is None
    md = (tmp_path / "synthetic-teacher.md").read_text()
    assert "| name | role | hr@5 |" in md and "make bench-rec" in md
    assert set(COLUMNS) >= {"hr@10", "ndcg@10", "hr@20", "ndcg@20", "params", "size_mb", "train_minutes"}

