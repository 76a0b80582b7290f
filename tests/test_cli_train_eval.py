"""``leanrank train search`` and ``leanrank eval`` end to end in subprocesses, on the synthetic catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = ["--num-layers", "1", "--max-steps", "3", "--valid-queries", "5", "--max-train-queries", "20",
         "--batch-size", "8", "--max-length", "32", "--eval-every", "3"]


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LEANRANK_DATA"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "leanrank.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny 3-step training run (1 layer of MiniLM, 20 train queries)."""
    tmp = tmp_path_factory.mktemp("cli")
    proc = run("train", "search", "--dataset", "synthetic", "--out", str(tmp / "run"), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "best valid ndcg@10" in proc.stdout
    return tmp


def test_train_writes_model_dir_and_run_record(trained):
    run_dir = trained / "run"
    model = run_dir / "model"
    for name in ("config.json", "model.safetensors", "leanrank.json"):
        assert (model / name).is_file(), name
    assert (run_dir / "checkpoint.pt").is_file()
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert record["steps"] == 3 and record["dataset"] == "synthetic"
    assert record["train_queries"] == 20
    assert record["config"]["batch_size"] == 8 and record["setup"]["num_layers"] == 1
    assert [h["step"] for h in record["history"]] == [3]
    h = record["history"][0]
    assert 0.0 <= h["ndcg@10"] <= 1.0 and h["queries"] == 5
    assert record["best_step"] == 3 and record["best_ndcg@10"] == h["ndcg@10"]
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 1 and len(config["id2label"]) == 1  # one relevance logit


def test_model_card_records_parent_and_steps(trained):
    card = json.loads((trained / "run" / "model" / "leanrank.json").read_text(encoding="utf-8"))
    assert card["kind"] == "cross-encoder" and card["parent"] == "minilm-l6"
    steps = [s["step"] for s in card["steps"]]
    assert steps == ["truncate", "train", "calibrate"]
    assert card["calibration"]["a"] > 0 and card["calibration"]["fitted_on"] == "synthetic:valid"
    train = card["steps"][1]
    assert train["steps"] == 3 and train["dataset"] == "synthetic" and train["config"]["max_steps"] == 3
    assert card["max_length"] == 32 and card["label_range"] == [1.0, 3.0]
    assert 0.0 <= card["metrics"]["valid_ndcg@10"] <= 1.0


def test_eval_writes_metrics(trained):
    out = trained / "m.json"
    proc = run("eval", str(trained / "run" / "model"), "--dataset", "synthetic", "--split", "valid",
               "--max-queries", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ndcg@10" in proc.stdout
    metrics = json.loads(out.read_text(encoding="utf-8"))
    assert metrics["split"] == "valid" and metrics["dataset"] == "synthetic"
    m = metrics["metrics"]
    assert 0.0 <= m["ndcg@10"] <= 1.0 and 0.0 <= m["ndcg@10_judged"] <= 1.0
    assert m["queries"] == 5 and m["eval_pairs"] > 5 * 8   # judged + BM25 candidates
    assert m["rmse"] is not None and 0.0 <= m["rmse"] <= 2.0
    lo, hi = m["ndcg@10_ci95"]
    assert lo <= m["ndcg@10"] <= hi


def test_eval_missing_model_dir():
    proc = run("eval", "/nonexistent")
    assert_one_line_error(proc, "/nonexistent", "model directory not found")


def test_eval_bad_split(trained):
    proc = run("eval", str(trained / "run" / "model"), "--split", "nope")
    assert_one_line_error(proc, "split", "'nope'")


def test_train_unknown_dataset(tmp_path):
    proc = run("train", "search", "--dataset", "nope", "--out", str(tmp_path / "x"))
    assert_one_line_error(proc, "unknown dataset", "'nope'", "synthetic")
    assert not (tmp_path / "x").exists()


def test_train_unknown_loss(tmp_path):
    proc = run("train", "search", "--loss", "nope", "--out", str(tmp_path / "x"), *SMALL)
    assert_one_line_error(proc, "loss='nope'", "bce")
    assert not (tmp_path / "x").exists()


def test_train_fp16_on_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    proc = run("train", "search", "--precision", "fp16", "--out", str(tmp_path / "x"), *SMALL)
    assert_one_line_error(proc, "fp16", "CUDA", "bf16")
    assert not (tmp_path / "x").exists()


def test_resume_a_finished_run_does_not_train_more(trained):
    run_dir = trained / "run"
    before = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    ckpt_mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    proc = run("train", "search", "--dataset", "synthetic", "--out", str(run_dir), "--resume", *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "starting from scratch" not in proc.stdout
    after = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert after["steps"] == 3
    assert after["history"] == before["history"]
    assert after["train_pairs"] == before["train_pairs"]
    assert after["train_seconds"] == before["train_seconds"]    # a fresh run would time itself anew
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == ckpt_mtime  # nothing trained, nothing saved
    assert after["best_step"] == 3
    assert (run_dir / "model" / "model.safetensors").is_file()
