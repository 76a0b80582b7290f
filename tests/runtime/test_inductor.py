"""int8-inductor (PT2E static int8 + torch.compile): close to the float model on several batch
sizes and lengths, int8 on disk, reloaded bit-for-bit, clear errors for foreign folders."""

import json

import numpy as np
import pytest

from leanrank.core.errors import LeanrankError
from leanrank.runtime.inductor import InductorInt8Config, is_inductor, load_inductor, quantize_inductor
from leanrank.runtime.loading import load_scorer
from leanrank.runtime.parity import spearman
from tests.runtime.test_export import PAIRS  # the same 36 real-looking pairs as the ONNX tests

pytest.importorskip("torchao")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, one_thread):
    import copy

    import torch
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(1)
    model = CrossEncoder.from_config(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=128, max_position_embeddings=64,
                                                initializer_range=0.2))
    model.eval()
    reference = copy.deepcopy(model)
    scorer = quantize_inductor(model, InductorInt8Config(calibration_pairs=24), PAIRS)
    out = scorer.save(tmp_path_factory.mktemp("inductor") / "int8")
    return reference, scorer, out


def _signal_to_noise_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - got) ** 2), 1e-20)))


def test_int8_scores_track_the_float_model(compiled):
    reference, scorer, _ = compiled
    q, t = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    for batch in (1, 7, 32):                 # several batch sizes and padded lengths, one graph
        titles = [x + " extra words" * (batch % 3) for x in t]
        ref, got = reference.score(q, titles), scorer.score(q, titles, batch_size=batch)
        assert got.shape == ref.shape == (len(PAIRS),)
        assert _signal_to_noise_db(ref, got) > 20, (ref, got)
        assert spearman(ref, got) > 0.95


def test_saved_folder_is_int8_and_reloads_identically(compiled):
    from safetensors import safe_open

    _, scorer, out = compiled
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        codes = [k for k in keys if k.endswith(".weight_int8")]
        assert codes and all(f.get_tensor(k).dtype.is_floating_point is False for k in codes)
    assert not any(k.endswith("attention.self.query.weight") for k in keys)      # no float copy of Linears
    card = json.loads((out / "leanrank.json").read_text())
    step = card["steps"][-1]
    assert step["scheme"] == "int8-inductor" and step["bytes_after"] < step["bytes_before"]
    assert len(json.loads((out / "calibration.json").read_text())) == 24
    again = load_scorer(out)
    assert is_inductor(again.card)
    q, t = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    np.testing.assert_array_equal(again.score(q, t), scorer.score(q, t))


def test_foreign_or_damaged_folders_fail_with_one_clear_error(compiled, tmp_path):
    import shutil

    _, _, out = compiled
    (tmp_path / "leanrank.json").write_text(json.dumps({"kind": "cross-encoder", "steps": []}))
    with pytest.raises(LeanrankError, match="not an int8-inductor model folder"):
        load_inductor(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    card = json.loads((broken / "leanrank.json").read_text())
    card["steps"][-1]["config"]["mode"] = "dynamic"          # a key this version does not know
    (broken / "leanrank.json").write_text(json.dumps(card))
    with pytest.raises(LeanrankError, match="cannot read"):
        load_inductor(broken)


def test_config_and_calibration_are_validated(tiny_cross_encoder):
    with pytest.raises(LeanrankError, match="calibration_pairs"):
        InductorInt8Config(calibration_pairs=0)
    with pytest.raises(LeanrankError, match="seq_multiple"):
        InductorInt8Config(seq_multiple=0)
    model = tiny_cross_encoder()
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    with pytest.raises(LeanrankError, match="calibration pairs"):
        quantize_inductor(model, InductorInt8Config(), [])
    assert all((model.model.state_dict()[k] == v).all() for k, v in before.items())    # untouched
