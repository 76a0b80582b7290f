"""quantize_: every scheme keeps the ranking of a model, saves and reloads exactly, reports
what it skipped; bad configs fail with one clear error."""

import warnings

import numpy as np
import pytest
import torch

from leanrank.compress.quantize import (
    DynamicInt8Config,
    EmbeddingConfig,
    StaticInt8Config,
    WeightOnlyConfig,
    is_quantized,
    load_quantized,
    make_config,
    quantize_,
)
from leanrank.core.errors import LeanrankError
from leanrank.core.modules import blocks_filter
from leanrank.runtime.loading import load_scorer
from leanrank.runtime.parity import spearman

QUERIES = ["cordless drill", "white paint", "claw hammer", "led light bulb 60w", "toilet seat", "garden hose"]
TITLES = ["dewalt 20v cordless drill kit", "behr ultra white interior paint", "estwing claw hammer 16 oz",
          "philips led bulb soft white", "round toilet seat white", "flexible garden hose 50 ft"]
PAIRS = [(q, t) for q in QUERIES for t in TITLES]
Q, T = [p[0] for p in PAIRS], [p[1] for p in PAIRS]


@pytest.fixture
def model(tiny_cross_encoder, one_thread):
    m = tiny_cross_encoder(seed=1, initializer_range=0.2, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, hidden_size=64, intermediate_size=128)
    m.eval()
    return m


@pytest.mark.parametrize("scheme, min_rho", [
    # random tiny weights are harsher on int4 than trained ones; real-data quality is in the benchmark
    ("int8-dynamic", 0.97), ("int8-static", 0.9), ("int8-weight", 0.995), ("int4-weight", 0.5),
    ("fp16", 0.999), ("bf16", 0.98), ("emb-int8", 0.995), ("emb-int4", 0.95),
])
def test_scheme_keeps_ranking_and_roundtrips(model, tmp_path, scheme, min_rho):
    ref = model.score(Q, T)
    overrides = {"calibration": tuple(PAIRS)} if scheme == "int8-static" else {}
    report = quantize_(model, make_config(scheme, **overrides))
    got = model.score(Q, T)
    assert report.swapped and report.bytes_after < report.bytes_before
    assert spearman(ref, got) >= min_rho
    model.save(tmp_path / "q")
    again = load_scorer(tmp_path / "q")
    assert is_quantized(again.card)
    np.testing.assert_allclose(again.score(Q, T), got, atol=1e-5)


def test_score_head_stays_float_and_filter_excludes_blocks(model):
    report = quantize_(model, DynamicInt8Config(), blocks_filter(["layer.0", "classifier"]))
    assert "model.classifier" not in report.swapped
    assert not any(".layer.0." in f for f in report.swapped)
    assert any(".layer.1." in f for f in report.swapped)
    assert type(model.model.classifier) is torch.nn.Linear
    step = model.card.steps[-1]
    assert step["step"] == "quantize" and step["scheme"] == "int8-dynamic"


def test_unhandled_modules_are_skipped_with_a_warning(model):
    with pytest.warns(UserWarning, match="cannot handle"):
        report = quantize_(model, WeightOnlyConfig(bits=4, group_size=48))   # 64 % 48 != 0
    assert report.skipped and all("group_size" in r or "filter" in r for r in report.skipped.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.score(Q[:2], T[:2])                    # still runs


def test_static_calibration_is_recorded_and_required():
    with pytest.raises(LeanrankError, match="calibration set"):
        StaticInt8Config(calibration=())
    with pytest.raises(LeanrankError, match="observer"):
        StaticInt8Config(calibration=(("a", "b"),), observer="mean")
    record = StaticInt8Config(calibration=tuple(PAIRS)).record()
    assert record["calibration_size"] == len(PAIRS) and len(record["calibration_sha1"]) == 12


def test_minmax_and_percentile_observers_differ(tiny_cross_encoder, one_thread):
    results = {}
    for observer in ("minmax", "percentile"):
        m = tiny_cross_encoder(seed=1, initializer_range=0.2)
        quantize_(m, StaticInt8Config(calibration=tuple(PAIRS), observer=observer, percentile=99.0))
        ranges = [mod.act_range for mod in m.modules() if hasattr(mod, "act_range")]
        results[observer] = torch.stack(ranges)
    assert (results["percentile"][:, 0, 1] <= results["minmax"][:, 0, 1] + 1e-6).all()
    assert (results["percentile"][:, 0, 1] < results["minmax"][:, 0, 1]).any()


def test_bad_configs_and_missing_tables(model):
    with pytest.raises(LeanrankError, match="unknown scheme"):
        make_config("int3")
    with pytest.raises(LeanrankError, match="bits"):
        WeightOnlyConfig(bits=2)
    with pytest.raises(LeanrankError, match="no embedding table"):
        quantize_(model, EmbeddingConfig(tables=("item_embeddings",)))


def test_corrupt_saved_state_is_refused(model, tmp_path):
    quantize_(model, DynamicInt8Config())
    model.save(tmp_path / "q")
    card = (tmp_path / "q" / "leanrank.json").read_text().replace('"int8-dynamic"', '"int8-dynamic"')
    card = card.replace("DynamicInt8Linear", "WeightOnlyLinear")
    (tmp_path / "q" / "leanrank.json").write_text(card)
    with pytest.raises(LeanrankError, match="does not match|do not match"):
        load_quantized(tmp_path / "q")
