"""CrossEncoder: save/reload, the directory format (also read by sentence-transformers), scoring order,
layer truncation and the label mapping."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from leanrank.core.errors import LeanrankError
from leanrank.models.cross_encoder import CrossEncoder, keep_layers

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pairs(tiny_search) -> tuple[list[str], list[str]]:
    """24 judged (query, title) pairs of varied length, not sorted by length."""
    ds = tiny_search["train"]
    js = ds.judgments[:24]
    return [j.query for j in js], [ds.titles[j.product_id] for j in js]


@pytest.fixture
def model(tiny_cross_encoder) -> CrossEncoder:
    ce = tiny_cross_encoder()
    with torch.no_grad():  # spread the logits of a random model so rankings are well defined
        ce.model.classifier.weight.mul_(200.0)
    return ce


def test_save_reload_gives_identical_scores(model, pairs, tmp_path):
    before = model.score(*pairs)
    model.card.label_range = (0.0, 4.0)
    path = model.save(tmp_path / "ce")
    assert path == tmp_path / "ce"
    reloaded = CrossEncoder.from_pretrained(path)
    np.testing.assert_array_equal(reloaded.score(*pairs), before)
    assert reloaded.card.label_range == (0.0, 4.0) and reloaded.card.kind == "cross-encoder"
    assert reloaded.max_length == model.max_length
    assert np.ptp(before) > 0.01  # the scores are not all the same


def test_saved_directory_layout(model, tmp_path):
    path = model.save(tmp_path / "ce")
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "leanrank.json"} <= names
    config = json.loads((path / "config.json").read_text())
    assert config.get("num_labels", len(config["id2label"])) == 1
    card = json.loads((path / "leanrank.json").read_text())
    assert card["kind"] == "cross-encoder" and card["max_length"] == 48
    model.save(path)  # overwriting in place works and leaves no temp folders behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ce"]


def test_sentence_transformers_reads_the_directory(model, pairs, tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    path = model.save(tmp_path / "ce")
    ours = model.score(*pairs)
    st = STCrossEncoder(str(path), activation_fn=torch.nn.Identity(), max_length=model.max_length,
                        device="cpu")
    theirs = np.asarray(st.predict(list(zip(*pairs, strict=True)), batch_size=8, show_progress_bar=False))
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)  # raw logits agree
    assert _spearman(theirs, ours) > 0.99


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_score_returns_input_order(model, pairs):
    queries, titles = pairs
    lengths = [len(q) + len(t) for q, t in zip(queries, titles, strict=True)]
    assert lengths != sorted(lengths)  # so length bucketing really reorders the work
    batched = model.score(queries, titles, batch_size=5)
    one_by_one = np.array([model.score([q], [t])[0] for q, t in zip(queries, titles, strict=True)])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    perm = list(range(len(queries)))
    random.Random(0).shuffle(perm)
    shuffled = model.score([queries[i] for i in perm], [titles[i] for i in perm], batch_size=5)
    np.testing.assert_allclose(shuffled, batched[perm], atol=1e-5)


def test_score_edge_cases(model, pairs):
    with pytest.raises(LeanrankError, match="2 queries but 1 titles"):
        model.score(["a", "b"], ["x"])
    empty = model.score([], [])
    assert empty.shape == (0,) and empty.dtype == np.float32
    model.model.train()
    out = model.score(*pairs)
    assert model.model.training  # scoring restores the training mode
    assert out.shape == (24,) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, model.score(*pairs))  # dropout is off while scoring


def test_keep_layers_keeps_evenly_spaced_layers(tiny_cross_encoder, pairs):
    ce = tiny_cross_encoder(num_hidden_layers=6)
    layers = list(ce.model.bert.encoder.layer)
    assert keep_layers(ce.model, 3) == [0, 2, 5]
    assert [id(m) for m in ce.model.bert.encoder.layer] == [id(layers[i]) for i in (0, 2, 5)]
    assert ce.model.config.num_hidden_layers == 3
    out = ce.score(*pairs)
    assert out.shape == (24,) and np.isfinite(out).all()

    assert keep_layers(tiny_cross_encoder(num_hidden_layers=6).model, 1) == [5]
    assert keep_layers(tiny_cross_encoder(num_hidden_layers=12).model, 6) == [0, 2, 4, 7, 9, 11]
    assert keep_layers(tiny_cross_encoder(num_hidden_layers=4).model, 4) == [0, 1, 2, 3]
    for bad in (0, 7):
        with pytest.raises(LeanrankError, match="num_layers"):
            keep_layers(tiny_cross_encoder(num_hidden_layers=6).model, bad)


def test_from_pretrained_truncates(tiny_cross_encoder, pairs, tmp_path):
    path = tiny_cross_encoder(num_hidden_layers=4).save(tmp_path / "ce")
    small = CrossEncoder.from_pretrained(path, num_layers=2, max_length=32)
    assert len(small.model.bert.encoder.layer) == 2 and small.model.config.num_hidden_layers == 2
    assert small.card.steps[-1] == {"step": "truncate", "num_layers": 2, "kept": [0, 3]}
    assert small.max_length == 32
    assert np.isfinite(small.score(*pairs)).all()
    again = CrossEncoder.from_pretrained(small.save(tmp_path / "small"))
    assert again.model.config.num_hidden_layers == 2


def test_predict_labels_maps_into_label_range(model):
    logits = np.array([-50.0, -1.0, 0.0, 1.0, 50.0], dtype=np.float32)
    labels = model.predict_labels(logits)
    assert model.card.label_range == (1.0, 3.0)
    assert np.all((labels >= 1.0) & (labels <= 3.0)) and np.all(np.diff(labels) > 0)
    np.testing.assert_allclose(labels[[0, 2, 4]], [1.0, 2.0, 3.0], atol=1e-6)
    model.card.label_range = (0.0, 4.0)
    np.testing.assert_allclose(model.predict_labels(np.array([0.0])), [2.0])


def test_rejects_more_than_one_output(model):
    two = AutoModelForSequenceClassification.from_config(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                   vocab_size=128, max_position_embeddings=64, num_labels=2))
    with pytest.raises(LeanrankError, match="num_labels=1"):
        CrossEncoder(two, model.tokenizer)
