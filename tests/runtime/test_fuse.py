"""Attention fusion of dynamo-exported BERT graphs: every self-attention block becomes one ORT
``Attention`` node, the scores do not move (padding included), int8 turns it into ``QAttention``."""

from collections import Counter

import numpy as np
import pytest

from leanrank.core.errors import LeanrankError
from leanrank.runtime.export import export_onnx, matmul_blocks, ort_quantize
from leanrank.runtime.fuse import fuse_attention
from leanrank.runtime.ort import OrtScorer

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

QUERIES = ["cordless drill", "white paint", "claw hammer", "led light bulb 60w"]
TITLES = ["dewalt 20v cordless drill kit with two batteries and a long title", "behr ultra white paint",
          "estwing hammer", "philips led bulb soft white 4 pack"]
PAIRS = [(q, t) for q in QUERIES for t in TITLES]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, one_thread):
    import torch
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(3)
    model = CrossEncoder.from_config(BertConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                                intermediate_size=128, max_position_embeddings=64,
                                                initializer_range=0.2))
    model.eval()
    root = tmp_path_factory.mktemp("fuse")
    export_onnx(model, root / "plain", PAIRS, fuse=False)
    export_onnx(model, root / "fused", PAIRS)
    return model, root


def ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_every_block_fused_and_scores_unchanged(exports):
    model, root = exports
    plain, fused = ops(root / "plain" / "model.onnx"), ops(root / "fused" / "model.onnx")
    assert fused["Attention"] == 3 and plain["Attention"] == 0
    assert plain["Softmax"] == 3 and fused["Softmax"] == 0
    assert sum(fused.values()) < sum(plain.values()) / 2
    q = [p[0] for p in PAIRS]
    for extra in ("", " with more words on the end of the title"):
        t = [p[1] + extra for p in PAIRS]
        for batch in (1, 5, 16):       # padding differs per batch: the mask must be honoured
            np.testing.assert_allclose(OrtScorer(root / "fused").score(q, t, batch_size=batch),
                                       model.score(q, t), atol=1e-4)
    card = (root / "fused" / "leanrank.json").read_text()
    assert '"fused_attention_blocks": 3' in card


def test_fused_blocks_keep_their_layer_and_quantize_to_qattention(exports, tmp_path):
    _, root = exports
    blocks = matmul_blocks(root / "fused" / "model.onnx")
    assert sorted(b for n, b in blocks.items() if "Attention" in n) == ["layer.0", "layer.1", "layer.2"]
    ort_quantize(root / "fused", tmp_path / "int8", PAIRS, min_spearman=0.8)
    assert ops(tmp_path / "int8" / "model.onnx")["QAttention"] == 3
    # the mixed plan can keep a fused block in float
    ort_quantize(root / "fused", tmp_path / "mixed", PAIRS, exclude_blocks=["layer.0", "classifier"],
                 min_spearman=0.8)
    mixed = ops(tmp_path / "mixed" / "model.onnx")
    assert mixed["QAttention"] == 2 and mixed["Attention"] == 1
    with pytest.raises(LeanrankError, match="--no-fuse"):       # static int8 needs the plain graph
        ort_quantize(root / "fused", tmp_path / "static", PAIRS, calibration=PAIRS)
    assert not (tmp_path / "static").exists()


def test_graph_without_a_mask_input_is_left_alone(exports):
    _, root = exports
    model = onnx.load(str(root / "plain" / "model.onnx"))
    for i in model.graph.input:
        if i.name == "attention_mask":
            i.name = "renamed_mask"
    before = len(model.graph.node)
    out, fused = fuse_attention(model, head_size=16)
    assert fused == 0 and len(out.graph.node) == before


def test_wrong_head_size_is_not_fused(exports):
    _, root = exports
    _, fused = fuse_attention(onnx.load(str(root / "plain" / "model.onnx")), head_size=48)
    assert fused == 0
