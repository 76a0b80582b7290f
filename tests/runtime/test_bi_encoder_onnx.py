"""The ONNX query encoder: same unit vectors as the torch bi-encoder (padding included), exported
once per weights, and a graph that fails parity is never kept."""

import numpy as np
import pytest

from leanrank.core.errors import LeanrankError

pytest.importorskip("onnxruntime")

TEXTS = ["cordless drill", "dewalt 20v max cordless drill kit with two batteries", "white paint",
         "led bulb", "toilet seat round white", "garden hose 50 ft", "x"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, one_thread):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from leanrank.models.bi_encoder import BiEncoder
    from leanrank.models.defaults import resolve_model_path

    torch.manual_seed(2)
    model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                                 max_position_embeddings=64))
    folder = tmp_path_factory.mktemp("bi") / "encoder"
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(None))
    tokenizer.save_pretrained(folder)
    return BiEncoder.from_pretrained(folder, max_length=32)


def test_onnx_encoder_matches_torch_and_is_exported_once(encoder, tmp_path, monkeypatch):
    from leanrank.runtime import bi_encoder_onnx
    from leanrank.runtime.bi_encoder_onnx import onnx_bi_encoder

    ort = onnx_bi_encoder(encoder, tmp_path, TEXTS[:3], threads=1, log=lambda _: None)
    for batch in (1, 3, 7):
        got = ort.encode(TEXTS, batch_size=batch)
        np.testing.assert_allclose(got, encoder.encode(TEXTS), atol=1e-5)
    assert got.shape == (len(TEXTS), 64) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    calls = []
    monkeypatch.setattr(bi_encoder_onnx, "export_bi_encoder", lambda *a, **k: calls.append(a))
    again = onnx_bi_encoder(encoder, tmp_path, TEXTS[:3], log=lambda _: None)
    assert calls == [] and again.directory == ort.directory


def test_failing_parity_keeps_nothing(encoder, tmp_path):
    from leanrank.runtime.bi_encoder_onnx import export_bi_encoder

    with pytest.raises(LeanrankError, match="fails parity"):
        export_bi_encoder(encoder, tmp_path / "strict", TEXTS, max_abs=-1.0)
    assert not (tmp_path / "strict").exists() and not list(tmp_path.glob(".strict*"))
    with pytest.raises(LeanrankError, match="parity texts"):
        export_bi_encoder(encoder, tmp_path / "none", [])


def test_needs_an_encoder_from_a_folder(encoder, tmp_path):
    import copy

    from leanrank.runtime.bi_encoder_onnx import onnx_bi_encoder

    anonymous = copy.copy(encoder)
    anonymous.source = None
    with pytest.raises(LeanrankError, match="safetensors"):
        onnx_bi_encoder(anonymous, tmp_path, TEXTS)


def test_catalog_sized_inputs_use_the_bulk_session(encoder, tmp_path):
    from leanrank.runtime.bi_encoder_onnx import onnx_bi_encoder

    ort = onnx_bi_encoder(encoder, tmp_path, TEXTS[:3], threads=1, log=lambda _: None)
    many = TEXTS * 10
    got = ort.encode(many, batch_size=8)           # 70 texts > 4 batches: the all-core session
    assert ort._bulk is not None
    np.testing.assert_allclose(got, encoder.encode(many), atol=1e-5)


def test_int8_encoder_keeps_direction_and_is_quantized_once(encoder, tmp_path, monkeypatch):
    import json

    from leanrank.runtime import bi_encoder_onnx
    from leanrank.runtime.bi_encoder_onnx import onnx_bi_encoder

    q = onnx_bi_encoder(encoder, tmp_path, TEXTS, threads=1, log=lambda _: None, int8=True)
    assert q.directory.name.endswith("-int8")
    meta = json.loads((q.directory / "bi_encoder.json").read_text())
    assert meta["int8"] == "ort-dynamic-per-channel" and meta["parity_min_cosine"] >= 0.98
    got, ref = q.encode(TEXTS), encoder.encode(TEXTS)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    cos = (got * ref).sum(1)
    assert cos.min() >= 0.98 and not np.allclose(got, ref, atol=1e-6)   # close, yet really int8
    calls = []
    monkeypatch.setattr(bi_encoder_onnx, "quantize_bi_encoder", lambda *a, **k: calls.append(a))
    again = onnx_bi_encoder(encoder, tmp_path, TEXTS, log=lambda _: None, int8=True)
    assert calls == [] and again.directory == q.directory


def test_int8_encoder_failing_parity_keeps_nothing(encoder, tmp_path):
    from leanrank.runtime.bi_encoder_onnx import export_bi_encoder, quantize_bi_encoder

    src = export_bi_encoder(encoder, tmp_path / "float", TEXTS)
    with pytest.raises(LeanrankError, match="int8 bi-encoder fails parity"):
        quantize_bi_encoder(src, tmp_path / "int8", TEXTS, min_cosine=1.01)
    assert not (tmp_path / "int8").exists()
