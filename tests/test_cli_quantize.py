"""``leanrank quantize`` / ``export`` / ``eval`` on quantized folders, end to end in subprocesses."""

from __future__ import annotations

import json

import pytest
from test_cli_train_eval import assert_one_line_error, run

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    import torch
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_config(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, max_position_embeddings=64,
                                                initializer_range=0.2))
    return model.save(tmp_path_factory.mktemp("cliq") / "float")


def test_quantize_torch_scheme_and_eval(float_dir):
    out = float_dir.parent / "int8"
    proc = run("quantize", str(float_dir), "--scheme", "int8-dynamic", "--out", str(out), "--min-spearman", "0.5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "modules quantized" in proc.stdout
    step = json.loads((out / "leanrank.json").read_text())["steps"][-1]
    assert step["scheme"] == "int8-dynamic" and step["parity_vs_float"]["pairs"] > 100
    proc = run("eval", str(out), "--dataset", "synthetic", "--split", "valid", "--max-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ndcg@10" in proc.stdout
    assert_one_line_error(run("quantize", str(float_dir), "--scheme", "int8-dynamic", "--out", str(out)), "exists")


def test_export_then_ort_int8(float_dir):
    onnx_dir, q_dir = float_dir.parent / "onnx", float_dir.parent / "ort-int8"
    proc = run("export", str(float_dir), "--out", str(onnx_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Spearman 1.0" in proc.stdout or "Spearman 0.99" in proc.stdout
    proc = run("quantize", str(onnx_dir), "--scheme", "ort-int8-dynamic", "--out", str(q_dir), "--min-spearman", "0.5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (q_dir / "model.onnx").stat().st_size < (onnx_dir / "model.onnx").stat().st_size
    assert_one_line_error(run("quantize", str(onnx_dir), "--scheme", "int8-dynamic", "--out", str(q_dir) + "x"),
                          "ONNX")


def test_bad_scheme_and_wrong_input(float_dir):
    assert_one_line_error(run("quantize", str(float_dir), "--scheme", "int3", "--out", "/tmp/x"), "unknown scheme")
    assert_one_line_error(run("quantize", str(float_dir), "--scheme", "ort-int8-dynamic", "--out", "/tmp/x"),
                          "leanrank export")
    assert_one_line_error(run("export", str(float_dir), "--format", "tflite", "--out", "/tmp/x"), "onnx")


def test_mixed_plan_and_qat_from_the_cli(float_dir):
    out = float_dir.parent / "mixed"
    proc = run("quantize", str(float_dir), "--scheme", "mixed", "--out", str(out), "--budget", "0.5",
               "--valid-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads((out / "mixed-plan.json").read_text())
    assert set(plan["sensitivity"]) == {"layer.0", "layer.1", "pooler"}
    assert plan["float_blocks"] == [] and plan["meets_budget"]          # a 50% budget lets all go int8
    card = json.loads((out / "leanrank.json").read_text())
    assert card["steps"][-1]["mixed_plan"]["float_blocks"] == []
    qat = float_dir.parent / "qat"
    proc = run("quantize", str(float_dir), "--scheme", "int8-qat", "--out", str(qat), "--steps", "2",
               "--valid-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    step = json.loads((qat / "leanrank.json").read_text())["steps"][-1]
    assert step["scheme"] == "int8-qat" and step["qat"]["steps"] == 2


def test_int8_inductor_from_the_cli_then_eval(float_dir):
    pytest.importorskip("torchao")
    out = float_dir.parent / "int8-inductor"
    proc = run("quantize", str(float_dir), "--scheme", "int8-inductor", "--out", str(out), "--min-spearman", "0.5",
               "--calibration-size", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Linear layers int8" in proc.stdout
    step = json.loads((out / "leanrank.json").read_text())["steps"][-1]
    assert step["scheme"] == "int8-inductor" and step["parity_vs_float"]["spearman"] > 0.5
    proc = run("eval", str(out), "--dataset", "synthetic", "--split", "valid", "--max-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ndcg@10" in proc.stdout
