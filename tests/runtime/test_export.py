"""ONNX export and ORT quantization: parity with PyTorch on real-looking pairs, dynamic axes,
a refusal that writes nothing, and the mixed-precision node exclusion."""

import json

import numpy as np
import pytest

from leanrank.core.errors import LeanrankError
from leanrank.runtime.export import export_onnx, matmul_blocks, ort_quantize
from leanrank.runtime.loading import load_scorer
from leanrank.runtime.ort import OrtScorer
from leanrank.runtime.parity import check_parity, parity, spearman

pytest.importorskip("onnxruntime")

QUERIES = ["cordless drill", "white paint", "claw hammer", "led light bulb 60w", "toilet seat", "garden hose"]
TITLES = ["dewalt 20v cordless drill kit with two batteries", "behr ultra white paint", "estwing hammer",
          "philips led bulb soft white 4 pack", "round toilet seat", "flexible garden hose 50 ft green"]
PAIRS = [(q, t) for q in QUERIES for t in TITLES]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_thread):
    import torch
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(1)
    model = CrossEncoder.from_config(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=128, max_position_embeddings=64,
                                                initializer_range=0.2))
    model.eval()
    out = tmp_path_factory.mktemp("onnx") / "fp32"
    result = export_onnx(model, out, PAIRS, fuse=False)     # static QDQ below needs the plain graph
    return model, out, result


def test_export_matches_torch_with_dynamic_axes(exported):
    model, out, result = exported
    assert result["max_abs_diff"] < 1e-4 and result["spearman"] > 0.9999
    scorer = load_scorer(out)
    assert isinstance(scorer, OrtScorer)
    for batch in (1, 7, 32):      # other batch sizes and sequence lengths than the export sample
        q, t = [p[0] for p in PAIRS], [p[1] + " extra words" * (batch % 3) for p in PAIRS]
        np.testing.assert_allclose(scorer.score(q, t, batch_size=batch), model.score(q, t), atol=1e-4)
    card = json.loads((out / "leanrank.json").read_text())
    assert card["steps"][-1]["step"] == "export" and card["steps"][-1]["opset"] >= 17


def test_refuses_to_overwrite_and_to_save_a_failing_graph(exported, tmp_path):
    model, out, _ = exported
    with pytest.raises(LeanrankError, match="exists"):
        export_onnx(model, out, PAIRS)
    with pytest.raises(LeanrankError, match="fails parity"):
        export_onnx(model, tmp_path / "strict", PAIRS, max_abs=0.0)
    assert not (tmp_path / "strict").exists()
    assert not list(tmp_path.glob(".strict*"))


def test_blocks_of_matmuls(exported):
    blocks = set(matmul_blocks(exported[1] / "model.onnx").values())
    assert {"layer.0", "layer.1", "classifier"} <= blocks


def test_ort_dynamic_static_and_mixed(exported, tmp_path):
    model, src, _ = exported
    q, t = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    ref = OrtScorer(src).score(q, t)
    dyn = ort_quantize(src, tmp_path / "dyn", PAIRS, min_spearman=0.8)
    qdq = ort_quantize(src, tmp_path / "qdq", PAIRS, calibration=PAIRS, min_spearman=0.8)
    half = ort_quantize(src, tmp_path / "half", PAIRS, exclude_blocks=["layer.0", "classifier"], min_spearman=0.8)
    for result, name in ((dyn, "dyn"), (qdq, "qdq"), (half, "half")):
        got = load_scorer(tmp_path / name).score(q, t)
        assert spearman(ref, got) == pytest.approx(result["spearman"], abs=1e-6)
    size = {n: (tmp_path / n / "model.onnx").stat().st_size for n in ("dyn", "half")}
    assert size["dyn"] < size["half"] < (src / "model.onnx").stat().st_size
    # keeping a block in float moves the scores toward the float graph
    assert np.abs(load_scorer(tmp_path / "half").score(q, t) - ref).mean() < dyn["mean_abs_diff"] * 1.5
    with pytest.raises(LeanrankError, match="fails parity"):
        ort_quantize(src, tmp_path / "never", PAIRS, min_spearman=1.01)
    assert not (tmp_path / "never").exists()


def test_parity_numbers():
    a = np.array([0.1, 0.5, 0.3, 0.9])
    assert parity(a, a)["max_abs_diff"] == 0 and spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    with pytest.raises(LeanrankError, match="Spearman"):
        check_parity(a, -a, "x", None, 0.9)
    with pytest.raises(LeanrankError, match="shape|reference"):
        parity(a, a[:2])
