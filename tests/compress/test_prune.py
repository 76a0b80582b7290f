"""prune_: criteria pick the right units, structures shrink physically, folders reload exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leanrank.compress import importance
from leanrank.compress.prune import (
    PruneConfig,
    count_params,
    cubic_schedule,
    encoder_linears,
    freeze_zeros_,
    prune_,
    stage_amount,
)
from leanrank.core.errors import LeanrankError
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.models.structure import encoder_layers

Q = ["cordless drill", "paint roller", "led bulb 60w", "garden hose", "deck screws", "shop vac"] * 3
T = ["dewalt 20v drill kit", "wooster roller cover", "philips 60w led", "flexzilla hose 50 ft",
     "grk 3 in deck screws", "ridgid 12 gal wet dry vac"] * 3
CAL = tuple((q, t, float(i % 3 == 0)) for i, (q, t) in enumerate(zip(Q, T)))


@pytest.mark.parametrize("bad, match", [
    ({"target": "rows"}, "target"), ({"criterion": "random"}, "criterion"), ({"amount": 1.0}, "amount"),
    ({"scope": "block"}, "scope"), ({"criterion": "taylor"}, "calibration"), ({"norm": 3}, "norm"),
])
def test_config_is_validated(bad, match):
    with pytest.raises(LeanrankError, match=match):
        PruneConfig(**bad)


def test_magnitude_keeps_the_largest_neurons(tiny_cross_encoder):
    ce = tiny_cross_encoder()
    layer = encoder_layers(ce.model)[0]
    with torch.no_grad():
        layer.intermediate.dense.weight[:32] *= 10          # neurons 0..31 are the big ones
    report = prune_(ce, PruneConfig(target="ffn", amount=0.5))
    assert report.removed[0] == list(range(32, 64))
    assert [layer.intermediate.dense.out_features for layer in encoder_layers(ce.model)] == [32, 32]


def test_taylor_gives_zero_to_units_without_weights(tiny_cross_encoder):
    ce = tiny_cross_encoder(num_attention_heads=4)
    layer = encoder_layers(ce.model)[1]
    with torch.no_grad():
        layer.output.dense.weight[:, 5] = 0
        layer.intermediate.dense.weight[5] = 0
        layer.intermediate.dense.bias[5] = 0
    scores = importance.taylor(ce, "ffn", CAL)
    assert scores[1][5] == 0 and (scores[1] > 0).sum() > 50
    heads = importance.taylor(ce, "heads", CAL)
    assert [len(s) for s in heads] == [4, 4]


def test_activation_prunes_neurons_that_never_fire(tiny_cross_encoder):
    ce = tiny_cross_encoder()
    layer = encoder_layers(ce.model)[0]
    with torch.no_grad():                  # GELU(-100) = 0: neurons 0..15 are silent on every token
        layer.intermediate.dense.weight[:16] = 0
        layer.intermediate.dense.bias[:16] = -100
    scores = importance.activation(ce, "ffn", CAL)
    assert scores[0][:16].max() < 1e-6 < scores[0][16:].min()
    ce.model.eval()
    before = ce.score(Q, T)
    report = prune_(ce, PruneConfig(target="ffn", amount=0.25, criterion="activation", calibration=CAL))
    assert set(range(16)) == set(report.removed[0])
    layer0 = encoder_layers(ce.model)[0]
    assert layer0.intermediate.dense.out_features == 48
    # layer 1 lost real neurons, so only layer 0's removal is exactly lossless: compare rankings
    assert np.corrcoef(before, ce.score(Q, T))[0, 1] > 0.5


def test_layer_scores_and_drop(tiny_cross_encoder):
    ce = tiny_cross_encoder(num_hidden_layers=4)
    act = importance.activation(ce, "layers", CAL)
    assert len(act) == 4 and all(float(a) > 0 for a in act)
    report = prune_(ce, PruneConfig(target="layers", amount=0.5, criterion="activation", calibration=CAL))
    assert len(report.removed["dropped"]) == 2
    assert ce.model.config.num_hidden_layers == 2 and len(encoder_layers(ce.model)) == 2


def test_ffn_pruned_folder_loads_with_stock_transformers(tiny_cross_encoder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    ce = tiny_cross_encoder()
    prune_(ce, PruneConfig(target="ffn", amount=0.5, criterion="taylor", calibration=CAL))
    assert ce.card.steps[-1]["stock_loadable"] is True
    path = ce.save(tmp_path / "ffn")
    stock = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert stock.config.intermediate_size == 32
    ce.model.eval()
    feats = ce.tokenize(Q, T)
    with torch.no_grad():
        np.testing.assert_allclose(stock(**feats).logits.squeeze(-1).numpy(), ce(**feats).numpy(), atol=1e-5)
    back = CrossEncoder.from_pretrained(path)
    np.testing.assert_allclose(back.score(Q, T), ce.score(Q, T), atol=1e-6)


def test_global_heads_scope_reloads_through_leanrank(tiny_cross_encoder, tmp_path):
    ce = tiny_cross_encoder(num_attention_heads=4, num_hidden_layers=3)
    before = count_params(ce.model)
    report = prune_(ce, PruneConfig(target="heads", amount=0.5, scope="global", criterion="activation",
                                    calibration=CAL))
    heads = ce.card.steps[-1]["structure"]["heads"]
    assert sum(heads) == 6 and min(heads) >= 1
    assert report.params_after < before and ce.card.steps[-1]["stock_loadable"] is False
    back = CrossEncoder.from_pretrained(ce.save(tmp_path / "heads"))
    np.testing.assert_allclose(back.score(Q, T), ce.score(Q, T), atol=1e-6)


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "activation"])
def test_unstructured_sparsity_sparse_storage_and_frozen_zeros(tiny_cross_encoder, tmp_path, criterion):
    ce = tiny_cross_encoder(hidden_size=64, intermediate_size=128, num_attention_heads=2)
    report = prune_(ce, PruneConfig(target="unstructured", amount=0.6, criterion=criterion, scope="global",
                                    calibration=CAL if criterion != "magnitude" else ()))
    assert report.sparsity == pytest.approx(0.6, abs=0.01)
    linears = encoder_linears(ce.model)
    assert len(linears) == 12
    zeros = {n: m.weight == 0 for n, m in linears.items()}
    handles = freeze_zeros_(ce.model, report.masks)
    opt = torch.optim.AdamW(ce.model.parameters(), lr=1e-2)
    ce.model.train()
    ce(**ce.tokenize(Q, T)).sum().backward()
    opt.step()
    for h in handles:
        h.remove()
    assert all((m.weight[zeros[n]] == 0).all() for n, m in linears.items())
    dense, sparse = ce.save(tmp_path / "dense"), ce.save(tmp_path / "sparse", sparse=True)
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    pruned_bytes = sum(m.weight.numel() * 4 for m in linears.values())
    assert size(dense) - size(sparse) > 0.5 * pruned_bytes      # 60% zeros: 4·nnz + numel/8 bytes
    np.testing.assert_allclose(CrossEncoder.from_pretrained(sparse).score(Q, T), ce.score(Q, T), atol=1e-6)


def test_cubic_schedule_and_stage_amounts():
    levels = cubic_schedule(0.5, 4)
    assert levels[-1] == pytest.approx(0.5) and all(a < b for a, b in zip(levels, levels[1:]))
    assert levels[0] > 0.5 / 4                # cubic: prunes fastest early
    assert stage_amount(0.0, 0.5) == 0.5 and stage_amount(0.5, 0.75) == pytest.approx(0.5)
    assert stage_amount(0.5, 0.5) == 0.0
    with pytest.raises(LeanrankError):
        cubic_schedule(0.5, 0)
