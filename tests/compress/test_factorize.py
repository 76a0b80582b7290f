"""factorize_: SVD factors reproduce low-rank weights, budgets hold, folders reload (also quantized)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from leanrank.compress.factorize import FactorizeConfig, factorize_
from leanrank.core.errors import LeanrankError
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.models.layers import FactorizedEmbedding, LowRankLinear

Q = ["cordless drill", "paint roller", "led bulb 60w", "garden hose"]
T = ["dewalt 20v drill kit", "wooster roller cover", "philips 60w led", "flexzilla hose 50 ft"]


@pytest.mark.parametrize("bad, match", [
    ({"energy": 0.9}, "exactly one"), ({"param_ratio": None}, "exactly one"),
    ({"param_ratio": 1.5}, "param_ratio"), ({"param_ratio": None, "energy": 1.0}, "energy"),
    ({"min_rank": 0}, "min_rank"), ({"embedding_rank": 0}, "embedding_rank"),
])
def test_config_is_validated(bad, match):
    with pytest.raises(LeanrankError, match=match):
        FactorizeConfig(**bad)


def _low_rank_model(tiny_cross_encoder, rank: int):
    ce = tiny_cross_encoder(hidden_size=64, intermediate_size=128, num_attention_heads=2)
    with torch.no_grad():
        for name, m in ce.model.named_modules():
            if type(m) is torch.nn.Linear and ".encoder." in f".{name}":
                a, b = torch.randn(m.out_features, rank), torch.randn(rank, m.in_features)
                m.weight.copy_(a @ b / m.in_features)
    ce.model.eval()
    return ce


def test_energy_rank_recovers_exactly_low_rank_weights(tiny_cross_encoder):
    ce = _low_rank_model(tiny_cross_encoder, rank=4)
    before = ce.score(Q, T)
    report = factorize_(ce, FactorizeConfig(energy=0.9999, param_ratio=None, min_rank=1))
    assert set(report.ranks.values()) == {4}
    assert all(e > 0.9999 for e in report.energy.values())
    np.testing.assert_allclose(ce.score(Q, T), before, atol=1e-4)
    assert sum(isinstance(m, LowRankLinear) for m in ce.model.modules()) == 12


def test_param_budget_holds_and_is_spent_where_energy_is(tiny_cross_encoder):
    ce = tiny_cross_encoder(hidden_size=64, intermediate_size=128, num_attention_heads=2)
    report = factorize_(ce, FactorizeConfig(param_ratio=0.5))
    assert report.linear_params_after <= 0.5 * report.linear_params_before
    assert report.linear_params_after > 0.4 * report.linear_params_before
    assert report.params_after < report.params_before


def test_layers_that_would_not_shrink_are_skipped(tiny_cross_encoder):
    ce = tiny_cross_encoder()
    report = factorize_(ce, FactorizeConfig(energy=0.999, param_ratio=None))   # random weights: full rank
    assert report.skipped and not report.ranks
    assert report.linear_params_after == report.linear_params_before
    with pytest.raises(LeanrankError, match="nothing to factorize"):
        factorize_(ce, FactorizeConfig(), filter_fn=lambda m, fqn: False)


def test_factorized_model_with_embeddings_reloads_and_quantizes(tiny_cross_encoder, tmp_path):
    from leanrank.compress.quantize import DynamicInt8Config, load_quantized, quantize_

    ce = _low_rank_model(tiny_cross_encoder, rank=8)
    full = ce.model.bert.embeddings.word_embeddings.weight.numel()
    report = factorize_(ce, FactorizeConfig(param_ratio=0.5, embedding_rank=16))
    emb = ce.model.bert.embeddings.word_embeddings
    assert isinstance(emb, FactorizedEmbedding)
    assert sum(p.numel() for p in emb.parameters()) < full / 3
    assert report.energy["bert.embeddings.word_embeddings"] > 16 / 64     # top-16 of 64 directions
    path = ce.save(tmp_path / "lowrank")
    back = CrossEncoder.from_pretrained(path)
    np.testing.assert_allclose(back.score(Q, T), ce.score(Q, T), atol=1e-6)
    quantize_(back, DynamicInt8Config())
    qpath = back.save(tmp_path / "lowrank-int8")
    again = load_quantized(qpath)
    np.testing.assert_allclose(again.score(Q, T), back.score(Q, T), atol=1e-5)
    assert np.corrcoef(again.score(Q, T), ce.score(Q, T))[0, 1] > 0.9


def test_activation_aware_svd_has_smaller_output_error_than_plain_svd(tiny_cross_encoder, tiny_search):
    """Whitened SVD minimises ‖(W − W')X‖ on the calibration inputs: every layer's output error
    on those tokens is no larger than plain SVD's at the same rank, and the model's scores move less."""
    from leanrank.compress.importance import input_grams

    ce = tiny_cross_encoder(hidden_size=64, intermediate_size=128, num_attention_heads=2)
    ce.model.eval()
    pairs = tuple(tiny_search["train"].sample_pairs(64, seed=0))
    linears = {n: m for n, m in ce.model.named_modules() if type(m) is torch.nn.Linear and ".encoder." in f".{n}"}
    grams = input_grams(ce, linears, pairs)
    ref = ce.score([p[0] for p in pairs], [p[1] for p in pairs])
    models = {}
    for name, cal in (("plain", ()), ("whitened", pairs)):
        m = copy.deepcopy(ce)
        models[name] = (m, factorize_(m, FactorizeConfig(param_ratio=0.4, calibration=cal)))
    plain, whitened = models["plain"], models["whitened"]
    common = [n for n in whitened[1].ranks if plain[1].ranks.get(n) == whitened[1].ranks[n]]
    assert common
    for n in common:                                     # same rank: output error on the calibration tokens
        w = linears[n].weight.detach().double()

        def err(model, w=w, n=n):
            lr = dict(model.model.named_modules())[n]
            approx = (lr.up.weight @ lr.down.weight).detach().double()
            d = w - approx
            return float(torch.trace(d @ grams[n] @ d.T))
        assert err(whitened[0]) <= err(plain[0]) * (1 + 1e-6)
    drift = {k: np.abs(m.score([p[0] for p in pairs], [p[1] for p in pairs]) - ref).mean() for k, (m, _) in models.items()}
    assert drift["whitened"] < drift["plain"]
    step = whitened[0].card.steps[-1]
    assert step["activation_aware"] is True and step["config"]["calibration"] == len(pairs)
    with pytest.raises(LeanrankError, match="calibration pairs"):
        input_grams(ce, linears, ())
