"""Physical surgery: removing a unit that contributes nothing leaves the model's output unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leanrank.core.errors import LeanrankError
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.models.structure import (
    apply_structure,
    encoder_layers,
    keep_heads,
    keep_neurons,
    pack_sparse,
    structure_of,
    unpack_sparse,
)

Q = ["cordless drill", "paint roller", "led bulb 60w", "garden hose"]
T = ["dewalt 20v drill kit", "wooster roller cover", "philips 60w led", "flexzilla hose 50 ft"]


def test_removing_a_silent_head_keeps_outputs(tiny_cross_encoder):
    ce = tiny_cross_encoder(num_hidden_layers=2, num_attention_heads=4)
    ce.model.eval()
    layer = encoder_layers(ce.model)[0]
    size = 32 // 4
    with torch.no_grad():      # head 1 writes nothing: its columns of the output projection are 0
        layer.attention.output.dense.weight[:, size:2 * size] = 0
    before = ce.score(Q, T)
    keep_heads(layer, [0, 2, 3], size)
    assert layer.attention.self.query.out_features == 3 * size
    assert layer.attention.output.dense.in_features == 3 * size
    np.testing.assert_allclose(ce.score(Q, T), before, atol=1e-5)
    assert structure_of(ce.model)["heads"] == [3, 4]


def test_removing_silent_neurons_keeps_outputs(tiny_cross_encoder):
    ce = tiny_cross_encoder()
    ce.model.eval()
    layer = encoder_layers(ce.model)[1]
    with torch.no_grad():
        layer.output.dense.weight[:, 10:30] = 0
    before = ce.score(Q, T)
    keep_neurons(layer, [i for i in range(64) if not 10 <= i < 30])
    assert layer.intermediate.dense.out_features == 44
    np.testing.assert_allclose(ce.score(Q, T), before, atol=1e-5)


def test_surgery_refuses_to_empty_a_layer(tiny_cross_encoder):
    layer = encoder_layers(tiny_cross_encoder().model)[0]
    with pytest.raises(LeanrankError, match="at least one"):
        keep_heads(layer, [], 16)
    with pytest.raises(LeanrankError, match="head ids"):
        keep_heads(layer, [5], 16)
    with pytest.raises(LeanrankError, match="at least one"):
        keep_neurons(layer, [])


def test_apply_structure_rebuilds_shapes(tiny_cross_encoder):
    src = tiny_cross_encoder(num_attention_heads=4)
    keep_heads(encoder_layers(src.model)[0], [1, 3], 8)
    keep_neurons(encoder_layers(src.model)[1], range(20))
    fresh = tiny_cross_encoder(num_attention_heads=4)
    apply_structure(fresh.model, structure_of(src.model))
    assert {k: v.shape for k, v in fresh.model.state_dict().items()} == \
           {k: v.shape for k, v in src.model.state_dict().items()}


def test_sparse_packing_round_trips_exactly():
    torch.manual_seed(0)
    w = torch.randn(40, 24)
    w[w.abs() < 0.8] = 0
    state = {"a.weight": w, "a.bias": torch.randn(40), "dense": torch.randn(8, 8)}
    packed = pack_sparse(state)
    assert "a.weight" not in packed and "dense" in packed      # dense tensors pass through
    assert sum(t.numel() * t.element_size() for t in packed.values()) < \
           sum(t.numel() * t.element_size() for t in state.values())
    back = unpack_sparse(packed)
    assert set(back) == set(state)
    for k in state:
        assert torch.equal(back[k], state[k])


def test_head_pruned_model_saves_and_reloads(tiny_cross_encoder, tmp_path):
    ce = tiny_cross_encoder(num_attention_heads=4)
    keep_heads(encoder_layers(ce.model)[0], [0, 1], 8)
    ce.card.add_step("prune", structure=structure_of(ce.model))
    back = CrossEncoder.from_pretrained(ce.save(tmp_path / "m"))
    np.testing.assert_allclose(back.score(Q, T), ce.score(Q, T), atol=1e-6)
