"""Hybrid recall, the recommender, variant checks and reload swaps, and the serve config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_app import SESSIONS, TITLES, TrigramEncoder, make_config, make_engine

from leanrank.core.errors import LeanrankError
from leanrank.serve.cascade import HybridRecall, Recommender, check_variant
from leanrank.serve.config import ServeConfig, load_config


@pytest.fixture(scope="module")
def recall():
    return HybridRecall.build(TITLES, TrigramEncoder())


def test_hybrid_recall_keeps_what_only_the_dense_side_finds(recall):
    got = recall.recall("drils", bm25_k=5, dense_k=2, rerank_n=5)   # a typo: no BM25 token matches
    assert got.bm25 == {} and got.ids and all(got.sources(p) == ["dense"] for p in got.ids)
    assert "p02" in got.ids or "p01" in got.ids
    bm25_only = recall.recall("drils", bm25_k=5, dense_k=0, rerank_n=5)
    assert bm25_only.ids == []


def test_hybrid_recall_keeps_what_only_bm25_finds(recall):
    got = recall.recall("ft", bm25_k=5, dense_k=1, rerank_n=5)
    only_bm25 = [p for p in got.ids if got.sources(p) == ["bm25"]]
    assert len(only_bm25) >= 2 and set(only_bm25) <= {"p06", "p12", "p13"}
    assert len(got.dense) == 1 and set(got.timings_ms) == {"bm25_ms", "dense_ms", "fuse_ms"}


def test_fusion_is_capped_at_rerank_n(recall):
    assert len(recall.recall("cordless drill kit", bm25_k=8, dense_k=8, rerank_n=3).ids) == 3


def test_recommender_popularity_fallback_and_seen_items():
    rec = Recommender(TITLES, SESSIONS)
    items, fallback = rec.recommend([], 3)
    assert fallback == "popularity" and items == ["p01", "p02", "p16"]
    items, _ = rec.recommend(["p01"], 2)
    assert items == ["p02", "p16"]


def test_check_variant_rejects_nan_and_wrong_shapes():
    class Nan:
        def score(self, q, t):
            return np.full(len(t), np.nan)

    class Short:
        def score(self, q, t):
            return np.zeros(1)

    pairs = [("drill", "cordless drill"), ("paint", "paint brush")]
    for bad in (Nan(), Short()):
        with pytest.raises(LeanrankError, match="failed the check set"):
            check_variant("x", bad, pairs)


def test_engine_reload_is_all_or_nothing(tmp_path):
    engine = make_engine(make_config(tmp_path), rec_model=False)
    before = dict(engine.variants)
    with pytest.raises(LeanrankError, match="model directory not found"):
        engine.reload({"a": "builtin:dense", "b": str(tmp_path / "missing")})
    assert engine.variants == before and engine.variant_dirs == {"a": "builtin:bm25", "b": "builtin:dense"}
    engine.reload({"a": "builtin:dense"})
    assert engine.variant_dirs["a"] == "builtin:dense" and engine.variants["a"] is not before["a"]


def test_config_rejects_unknown_keys_naming_them(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("variants: {a: builtin:bm25}\nbatching: {max_batch: 2, max_wiat_ms: 3}\n")
    with pytest.raises(LeanrankError, match="unknown batching option 'max_wiat_ms'"):
        load_config(path)
    path.write_text("variants: {a: builtin:bm25}\nsurprise: 1\n")
    with pytest.raises(LeanrankError, match="unknown serve config section 'surprise'"):
        load_config(path)
    with pytest.raises(LeanrankError, match="rerank_n"):
        ServeConfig.from_dict({"variants": {"a": "builtin:bm25"}, "recall": {"bm25_k": 5, "dense_k": 0,
                                                                              "rerank_n": 10}})
    with pytest.raises(LeanrankError, match="builtin:"):
        ServeConfig.from_dict({"variants": {"a": "builtin:magic"}})
    with pytest.raises(LeanrankError, match="arms"):
        ServeConfig.from_dict({"variants": {"a": "builtin:bm25"}, "bandit": {"arms": ["a"]}})
    with pytest.raises(LeanrankError, match="policy"):
        ServeConfig.from_dict({"variants": {"a": "builtin:bm25"}, "bandit": {"policy": "magic"}}).bandit_config()


def test_demo_recipe_is_valid():
    config = load_config(Path(__file__).resolve().parents[2] / "recipes" / "serve-demo.yaml")
    assert config.catalog.source == "synthetic" and config.bootstrap.enabled and config.privacy.insecure_dev_secret
    assert config.bandit_config().arms == tuple(config.variants)


class CountingEncoder(TrigramEncoder):
    """A TrigramEncoder that says where its weights are and counts the texts it encodes."""

    def __init__(self, source: Path | None):
        super().__init__()
        self.source, self.encoded = (str(source) if source else None), 0

    def encode(self, texts, batch_size: int = 128):
        self.encoded += len(texts)
        return super().encode(texts)


def test_catalog_embeddings_are_cached_per_encoder_and_titles(tmp_path):
    from leanrank.serve.cascade import catalog_embeddings

    weights = tmp_path / "enc"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"v1")
    cache = tmp_path / "cache"
    texts = list(TITLES.values())
    first = CountingEncoder(weights)
    a = catalog_embeddings(first, texts, cache, log=lambda _: None)
    assert first.encoded == len(texts) and len(list(cache.glob("catalog-*.npy"))) == 1
    again = CountingEncoder(weights)
    np.testing.assert_array_equal(catalog_embeddings(again, texts, cache, log=lambda _: None), a)
    assert again.encoded == 0                                  # read back, not re-encoded
    changed = CountingEncoder(weights)
    catalog_embeddings(changed, texts[:-1] + ["a new title"], cache, log=lambda _: None)
    assert changed.encoded == len(texts)                       # a changed catalog re-encodes
    (weights / "model.safetensors").write_bytes(b"v2 weights")
    retrained = CountingEncoder(weights)
    catalog_embeddings(retrained, texts, cache, log=lambda _: None)
    assert retrained.encoded == len(texts)                     # changed weights re-encode
    anonymous = CountingEncoder(None)
    catalog_embeddings(anonymous, texts, tmp_path / "never", log=lambda _: None)
    assert anonymous.encoded == len(texts) and not (tmp_path / "never").exists()


def test_engine_with_the_onnx_query_encoder_exports_once_and_caches_the_catalog(tmp_path, one_thread):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from leanrank.models.defaults import resolve_model_path
    from leanrank.runtime.bi_encoder_onnx import OrtBiEncoder
    from leanrank.serve.cascade import build_engine

    torch.manual_seed(0)
    folder = tmp_path / "tiny-encoder"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_path(None)).save_pretrained(folder)
    config = make_config(tmp_path, variants={"a": "builtin:dense"}, catalog={"source": "synthetic", "n_products": 120},
                         recall={"dense_model": str(folder), "dense_runtime": "onnx",
                                 "embedding_cache": str(tmp_path / "emb"), "encoder_cache": str(tmp_path / "enc")})
    first: list[str] = []
    engine = build_engine(config, log=first.append)
    assert isinstance(engine.recall_index.encoder, OrtBiEncoder)
    got = engine.recall_index.recall("cordless drill", bm25_k=8, dense_k=8, rerank_n=10)
    assert got.dense and len(got.ids) <= 10
    assert any("exporting the query encoder" in line for line in first)
    again: list[str] = []
    build_engine(config, log=again.append)            # a restart: nothing exported or encoded again
    assert not any("exporting" in line for line in again)
    assert any("catalog embeddings from" in line for line in again)
    with pytest.raises(LeanrankError, match="dense_runtime"):
        make_config(tmp_path, recall={"dense_runtime": "tensorrt"})
