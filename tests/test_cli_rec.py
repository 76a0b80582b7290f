"""``leanrank train rec`` end to end on tiny S3-Rec-format files, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leanrank.cli import main

TINY = ["--layers", "1", "--hidden", "16", "--heads", "2", "--max-len", "8", "--epochs", "2",
        "--batch-size", "16", "--lr", "0.005"]


def write_beauty(data: Path, bad_line: str | None = None) -> Path:
    """40 users over 20 items (item i followed by i + 1) in DATA/rec/amazon-beauty, with attributes."""
    folder = data / "rec" / "amazon-beauty"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{u + 1} " + " ".join(str((u + j) % 20 + 1) for j in range(4 + u % 4)) for u in range(40)]
    if bad_line is not None:
        lines[2] = bad_line
    (folder / "Beauty.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    attrs = {str(i): [1 + i % 3, 4 + i % 2] for i in range(1, 21)}
    (folder / "Beauty_item2attributes.json").write_text(json.dumps(attrs), encoding="utf-8")
    return data


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["leanrank", *args])
    monkeypatch.delenv("LEANRANK_DATA", raising=False)
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_rec_end_to_end_in_a_subprocess(tmp_path):
    data = write_beauty(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k != "LEANRANK_DATA"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "leanrank.cli", "train", "rec", "--dataset", "beauty",
                           "--data-dir", str(data), "--out", str(tmp_path / "run"), *TINY],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "beauty: 40 users, 20 items" in proc.stdout and "titles: no" in proc.stdout
    for name in ("valid (full", "test (full", "popularity_test (full", "ndcg@10", "hr@20"):
        assert name in proc.stdout, proc.stdout
    model = tmp_path / "run" / "model"
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "leanrank.json", "model.safetensors"]
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    assert config["n_items"] == 20 and config["n_attributes"] == 6 and config["layers"] == 1
    run = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert run["dataset"] == "beauty" and run["test"]["users"] == 40 and 0 <= run["test"]["ndcg@10"] <= 1
    assert run["steps"] == 6 and len(run["history"]) == 2  # 40 sequences / 16 = 3 batches x 2 epochs
    card = json.loads((model / "leanrank.json").read_text(encoding="utf-8"))
    assert card["kind"] == "seqrec" and card["metrics"]["test"]["ndcg@10"] == run["test"]["ndcg@10"]


def test_resume_and_changed_flags(tmp_path, monkeypatch, capsys, one_thread):
    data = str(write_beauty(tmp_path / "data"))
    args = ["train", "rec", "--dataset", "beauty", "--data-dir", data, "--out", str(tmp_path / "run"),
            "--no-attributes", *TINY]
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    first = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    code, out, err = run_main(monkeypatch, capsys, *args, "--resume")  # finished run: nothing more to train
    assert code == 0, err
    again = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert again["steps"] == first["steps"] == 6 and again["test"] == first["test"]
    code, out, err = run_main(monkeypatch, capsys, *args, "--hidden", "32", "--resume")
    assert code == 2 and "different dataset or model flags" in err


@pytest.mark.parametrize("extra, words", [
    (["--variant", "gru"], "variant='gru'"),
    (["--titles"], "has no item titles"),
    (["--precision", "fp16"], "precision='fp16'"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
])
def test_bad_flags_give_one_line(tmp_path, monkeypatch, capsys, extra, words):
    data = str(write_beauty(tmp_path / "data"))
    (tmp_path / "data" / "rec" / "amazon-sports").mkdir()
    (tmp_path / "data" / "rec" / "amazon-sports" / "Sports_and_Outdoors.txt").write_text("1 1 2 3\n2 2 3 1\n")
    if extra == ["--titles"]:
        extra = ["--dataset", "sports", "--titles"]
    code, out, err = run_main(monkeypatch, capsys, "train", "rec", "--dataset", "beauty", "--data-dir", data,
                              "--out", str(tmp_path / "run"), *TINY, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], err


def test_bad_data_line_names_file_and_line(tmp_path, monkeypatch, capsys):
    data = str(write_beauty(tmp_path / "data", bad_line="3 4 five 6"))
    code, out, err = run_main(monkeypatch, capsys, "train", "rec", "--dataset", "beauty", "--data-dir", data,
                              "--out", str(tmp_path / "run"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "Beauty.txt:3: id 'five' is not an integer" in lines[0]
    code, out, err = run_main(monkeypatch, capsys, "train", "rec", "--dataset", "beauty", "--out", "x")
    assert code == 2 and "--data-dir" in err


def test_eval_reads_a_seqrec_folder_and_matches_the_training_run(tmp_path, monkeypatch, capsys, one_thread):
    data = str(write_beauty(tmp_path / "data"))
    code, out, err = run_main(monkeypatch, capsys, "train", "rec", "--dataset", "beauty", "--data-dir", data,
                              "--out", str(tmp_path / "run"), *TINY)
    assert code == 0, err
    run = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    model = str(tmp_path / "run" / "model")
    code, out, err = run_main(monkeypatch, capsys, "eval", model, "--dataset", "beauty", "--data-dir", data)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "model" / "metrics-test.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics["ndcg@10"] == pytest.approx(run["test"]["ndcg@10"]) and "test (full, 40 users)" in out
    code, out, err = run_main(monkeypatch, capsys, "eval", model, "--dataset", "beauty", "--data-dir", data,
                              "--protocol", "sampled", "--split", "valid", "--out", str(tmp_path / "s.json"))
    assert code == 2 and "only 17 candidate negatives for a user, need 99" in err  # 20 items: too few for sampled-99
    code, out, err = run_main(monkeypatch, capsys, "eval", model, "--dataset", "beauty", "--data-dir", data,
                              "--split", "train")
    assert code == 2 and "valid or test" in err
