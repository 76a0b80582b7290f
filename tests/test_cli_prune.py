"""``leanrank prune`` / ``factorize`` end to end in subprocesses (synthetic data, tiny model)."""

from __future__ import annotations

import json

import pytest
from test_cli_train_eval import assert_one_line_error, run


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    import torch
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_config(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=64, max_position_embeddings=64))
    return model.save(tmp_path_factory.mktemp("clip") / "float")


def test_gradual_prune_with_fine_tuning(float_dir):
    out = float_dir.parent / "ffn"
    proc = run("prune", str(float_dir), "--out", str(out), "--target", "ffn", "--amount", "0.5",
               "--criterion", "taylor", "--heads-amount", "0.25", "--stages", "2", "--steps", "4",
               "--calibration-size", "64", "--valid-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stage 2/2" in proc.stdout and "parameters" in proc.stdout
    card = json.loads((out / "leanrank.json").read_text())
    prunes = [s for s in card["steps"] if s["step"] == "prune"]
    assert [p["config"]["target"] for p in prunes] == ["ffn", "ffn", "heads"]
    assert prunes[-1]["structure"]["intermediate"] == [32, 32]
    assert prunes[-1]["structure"]["heads"] == [3, 3]
    history = prunes[-1]["history"]
    assert [h["amount"] for h in history] == [pytest.approx(0.4375), pytest.approx(0.5)]
    assert all(h["fine_tune"]["steps"] == 2 for h in history)
    proc = run("eval", str(out), "--dataset", "synthetic", "--split", "valid", "--max-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unstructured_prune_then_recovery_keeps_the_zeros(float_dir):
    from leanrank.models.cross_encoder import CrossEncoder

    out = float_dir.parent / "sparse-kd"
    proc = run("prune", str(float_dir), "--out", str(out), "--target", "unstructured", "--amount", "0.5",
               "--scope", "global", "--valid-queries", "5", "--recover-steps", "6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = json.loads((out / "leanrank.json").read_text())["steps"]
    names = [s["step"] for s in steps]
    assert names[-3:] == ["prune", "distill", "store"]        # store: the sparse format on disk
    assert steps[-3]["recovery"]["steps"] == 6 and "valid_ndcg@10" in steps[-3]["recovery"]
    model = CrossEncoder.from_pretrained(out)
    weights = [m.weight for name, m in model.model.named_modules() if type(m).__name__ == "Linear" and ".encoder." in f".{name}"]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros >= 0.49, zeros        # distillation did not revive pruned weights


def test_factorize_command(float_dir):
    out = float_dir.parent / "lowrank"
    proc = run("factorize", str(float_dir), "--out", str(out), "--param-ratio", "0.5", "--valid-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    step = json.loads((out / "leanrank.json").read_text())["steps"][-1]
    assert step["step"] == "factorize" and step["linear_params_after"] <= 0.5 * step["linear_params_before"]
    assert set(step["valid_ndcg@10"]) == {"before", "factorized", "final"}
    assert step["activation_aware"] is True and step["config"]["calibration"] > 0      # the default
    plain = float_dir.parent / "lowrank-plain"
    proc = run("factorize", str(float_dir), "--out", str(plain), "--valid-queries", "5", "--calibration-size", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((plain / "leanrank.json").read_text())["steps"][-1]["activation_aware"] is False


def test_factorize_then_recover_by_distillation(float_dir):
    out, cache = float_dir.parent / "lowrank-kd", float_dir.parent / "parent-scores"
    proc = run("factorize", str(float_dir), "--out", str(out), "--param-ratio", "0.3", "--valid-queries", "5",
               "--recover-steps", "8", "--transfer-dir", str(cache))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "recovered by distillation, 8 steps" in proc.stdout
    steps = json.loads((out / "leanrank.json").read_text())["steps"]
    assert [s["step"] for s in steps[-2:]] == ["factorize", "distill"]
    assert steps[-2]["recovery"]["steps"] == 8 and steps[-2]["recovery"]["transfer_lists"] > 0
    meta = json.loads((cache / "transfer.meta.json").read_text())
    assert meta["teacher"] == str(float_dir) and (cache / "transfer.jsonl").stat().st_size > 0


def test_bad_input_is_one_line(float_dir, tmp_path):
    assert_one_line_error(run("prune", str(float_dir), "--out", str(tmp_path / "x"), "--target", "rows"), "target")
    assert_one_line_error(run("prune", str(float_dir), "--out", str(float_dir)), "exists")
    assert_one_line_error(run("prune", str(tmp_path / "missing"), "--out", str(tmp_path / "y")), "missing")
    assert_one_line_error(run("factorize", str(float_dir), "--out", str(tmp_path / "z"), "--param-ratio", "2"),
                          "param_ratio")
    assert_one_line_error(run("factorize", str(float_dir), "--out", str(tmp_path / "w"), "--calibration-size", "-1"),
                          "calibration size")
    assert_one_line_error(run("factorize", str(float_dir), "--out", str(tmp_path / "v"), "--recover-steps", "-3"),
                          "recovery steps")
