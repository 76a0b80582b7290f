"""Quantized modules: numerical quality vs float (SQNR / cosine), sizes, int4 packing."""

import pytest
import torch

from leanrank.compress.qmodules import (
    CastLinear,
    DynamicInt8Linear,
    QuantizedEmbedding,
    StaticInt8Linear,
    WeightOnlyLinear,
    pack_int4,
    unpack_int4,
)


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - got).pow(2).mean()))


@pytest.fixture
def linear_and_input(one_thread):
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64)
    x = torch.randn(4, 12, 128)
    return lin, x, lin(x).detach()


def test_int4_pack_roundtrip():
    q = torch.randint(-8, 8, (5, 16), dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.shape == (5, 8) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), q)


@pytest.mark.parametrize("make, min_db", [
    (lambda lin: DynamicInt8Linear.from_float(lin), 30.0),
    (lambda lin: WeightOnlyLinear.from_float(lin, bits=8, group_size=32), 38.0),
    (lambda lin: WeightOnlyLinear.from_float(lin, bits=4, group_size=32), 15.0),
    (lambda lin: CastLinear.from_float(lin, "bf16"), 35.0),
    (lambda lin: CastLinear.from_float(lin, "fp16"), 50.0),
])
def test_linear_schemes_keep_signal(linear_and_input, make, min_db):
    lin, x, ref = linear_and_input
    got = make(lin)(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert sqnr_db(ref, got) >= min_db


def test_static_int8_uses_calibrated_ranges(linear_and_input):
    lin, x, ref = linear_and_input
    good = StaticInt8Linear.from_float(lin, (float(x.min()), float(x.max())), (float(ref.min()), float(ref.max())))
    assert sqnr_db(ref, good(x)) >= 25.0
    clipped = StaticInt8Linear.from_float(lin, (-0.1, 0.1), (float(ref.min()), float(ref.max())))
    assert sqnr_db(ref, clipped(x)) < 10.0          # ranges matter: a bad calibration shows


@pytest.mark.parametrize("bits, min_cos, min_ratio", [(8, 0.9999, 3.5), (4, 0.99, 6.0)])
def test_embedding_rowwise(one_thread, bits, min_cos, min_ratio):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(1000, 64)
    q = QuantizedEmbedding.from_float(emb, bits)
    ids = torch.randint(0, 1000, (3, 7))
    cos = torch.nn.functional.cosine_similarity(emb(ids).detach(), q(ids), dim=-1)
    assert q(ids).shape == (3, 7, 64)
    assert float(cos.min()) >= min_cos
    float_bytes = emb.weight.numel() * 4
    q_bytes = sum(b.numel() * b.element_size() for b in q.buffers())
    assert float_bytes / q_bytes >= min_ratio


def test_weight_only_rejects_bad_bits():
    with pytest.raises(ValueError):
        WeightOnlyLinear(8, 8, bits=3)
