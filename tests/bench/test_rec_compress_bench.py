"""``leanrank.bench.rec_compress`` end to end on the synthetic sessions with a tiny teacher."""

from __future__ import annotations

import json

from leanrank.bench.rec_compress import run
from leanrank.data.sequences import load_sequence_dataset
from leanrank.train.rec import RecTrainConfig, build_seqrec, train_rec


def test_compress_and_distill_results(tmp_path, one_thread):
    ds = load_sequence_dataset("synthetic")
    teacher = build_seqrec(ds, {"hidden": 32, "layers": 2, "heads": 2, "max_len": 20, "dropout": 0.1})
    train_rec(teacher, ds, RecTrainConfig(lr=3e-3, max_steps=60), tmp_path / "t", progress=False, validate=False)
    teacher.save(tmp_path / "teacher")
    docs = run(tmp_path / "teacher", None, tmp_path / "out", tmp_path / "work", threads=1, finetune_minutes=0.01,
               student_minutes=0.02, valid_users=100, dataset="synthetic", log=lambda s: None)
    comp = json.loads((tmp_path / "out" / "synthetic-compress.json").read_text())
    dist = json.loads((tmp_path / "out" / "synthetic-distill.json").read_text())
    assert comp["rows"][0]["role"] == "teacher" and len(comp["rows"]) == 10
    rows = {r["name"]: r for r in comp["rows"]}
    tuned = rows["item table lowrank r=16 + fine-tune 0.01 min"]
    stored = rows["item table lowrank r=16 + fine-tune 0.01 min + int8 factor"]
    assert stored["table_ratio"] > 1.5 * tuned["table_ratio"] and abs(stored["ndcg@10"] - tuned["ndcg@10"]) < 0.02
    for r in comp["rows"][1:]:
        assert r["table_ratio"] > 1 and 0 <= r["ndcg@10"] <= 1
    int8 = next(r for r in comp["rows"] if r["name"] == "item table int8")
    assert abs(int8["ndcg_vs_teacher"] - 1) < 0.05 and 3.1 < int8["table_ratio"] <= 3.3  # 4·32 / (32 + 8 scale/zero bytes)
    assert [r["role"] for r in dist["rows"]] == ["teacher"] + ["ablation"] * 3 + ["variant"] * 2 + ["ablation"] * 5
    assert all(r["size_ratio"] > 1 for r in dist["rows"][1:])
    drows = {r["name"]: r for r in dist["rows"]}
    folded = drows["ablation: teacher folded, all layers, no training"]
    assert abs(folded["ndcg@10"] - dist["rows"][0]["ndcg@10"]) < 1e-3     # folding the side information is exact
    q8 = drows["student: folded, layers [1], KD + int8 item table"]
    assert q8["size_ratio"] > drows["student: folded, layers [1], KD (main)"]["size_ratio"]
    bar = comp["bar"]["lowrank_table_4x_smaller_at_97pct"]
    lowrank = [r for r in comp["rows"] if "lowrank" in r["name"] and r["table_ratio"] >= 4]
    assert (bar is None) == (not lowrank)
    if bar:
        assert bar["table_ratio"] >= 4 and bar["met"] == (bar["ndcg_vs_teacher"] >= 0.97)
    assert docs["distill"]["bar"]["student_10x_smaller_at_97pct"] is None or "met" in docs["distill"]["bar"][
        "student_10x_smaller_at_97pct"]
    assert "make bench-rec-compress" in (tmp_path / "out" / "synthetic-distill.md").read_text()
    only = run(tmp_path / "teacher", None, tmp_path / "only", tmp_path / "work2", threads=1, finetune_minutes=0.01,
               valid_users=100, dataset="synthetic", skip_distill=True, log=lambda s: None)
    assert set(only) == {"compress"} and sorted(p.name for p in (tmp_path / "only").iterdir()) == [
        "synthetic-compress.json", "synthetic-compress.md"]
    students = run(tmp_path / "teacher", None, tmp_path / "students", tmp_path / "work3", threads=1,
                   student_minutes=0.01, valid_users=100, dataset="synthetic", skip_compress=True, log=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "students").iterdir()) == ["synthetic-distill.json", "synthetic-distill.md"]
    assert abs(students["distill"]["rows"][1]["ndcg@10"] - students["distill"]["rows"][0]["ndcg@10"]) < 1e-3
