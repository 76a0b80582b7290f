"""Cached pair tokenization gives exactly the arrays of ``encode_pairs`` (the HF tokenizer),
truncation and padding included, and falls back where it cannot."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from leanrank.models.cross_encoder import encode_pairs
from leanrank.models.defaults import resolve_model_path
from leanrank.models.pair_tokens import CachedPairTokenizer, longest_first


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path(None))


def same(tokenizer, queries, titles, max_length):
    got = CachedPairTokenizer(tokenizer, max_length)
    assert got.supported
    want = encode_pairs(tokenizer, queries, titles, max_length, "np")
    for _ in range(2):           # second call: every text from the cache
        out = got(queries, titles)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(out[key], want[key], err_msg=key)
            assert out[key].dtype == np.int64


@pytest.mark.parametrize("max_length", [8, 16, 24, 48])   # HF needs multiples of 8 here
def test_matches_hf_on_every_length_combination(tokenizer, max_length):
    queries, titles = [], []
    for a in range(1, 40, 3):
        for b in range(1, 40, 4):      # odd and even budgets, either side longer, both over half
            queries.append(" ".join(["drill"] * a))
            titles.append(" ".join(["saw"] * b))
    same(tokenizer, queries, titles, max_length)


def test_matches_hf_on_real_looking_text(tokenizer):
    queries = ["cordless drill", "36 in. white vanity w/ top", "LED 60-watt équivalent bulb", "ÄÖÜ 1/2\" pvc"]
    titles = ["DEWALT 20-Volt MAX Lithium-Ion Cordless Drill/Driver Kit with battery 1.3Ah (2-pack)",
              "Glacier Bay Lancaster 36 in. W x 19 in. D Vanity in White with Marble Top", "x", "Cree 60W"]
    qs = [q for q in queries for _ in titles]
    ts = [t for _ in queries for t in titles]
    same(tokenizer, qs, ts, 48)
    same(tokenizer, qs, ts, 16)


def test_empty_text_and_unknown_tokenizer_fall_back(tokenizer):
    pairs = CachedPairTokenizer(tokenizer, 16)
    out = pairs(["drill", "saw"], ["", "makita saw"])       # HF drops an empty second text
    want = encode_pairs(tokenizer, ["drill", "saw"], ["", "makita saw"], 16, "np")
    np.testing.assert_array_equal(out["input_ids"], want["input_ids"])

    class NoCls:
        cls_token_id, sep_token_id, pad_token_id = None, 102, 0

    assert not CachedPairTokenizer(NoCls(), 16).supported


def test_cache_is_bounded(tokenizer):
    pairs = CachedPairTokenizer(tokenizer, 16, cache_size=10)
    pairs(["q"] * 8, [f"title {i}" for i in range(8)])
    pairs(["q"] * 8, [f"other {i}" for i in range(8)])
    assert len(pairs.cache) <= 10


def test_longest_first_budget():
    assert longest_first(3, 4, 10) == (3, 4)
    assert longest_first(2, 30, 10) == (2, 8)
    assert longest_first(30, 2, 10) == (8, 2)
    assert longest_first(20, 30, 9) == (4, 5) and longest_first(30, 20, 9) == (5, 4)


def test_copies_work_and_keep_the_cache(tokenizer):
    import copy
    import pickle

    pairs = CachedPairTokenizer(tokenizer, 16)
    pairs(["drill"], ["makita drill"])
    for clone in (copy.deepcopy(pairs), pickle.loads(pickle.dumps(pairs))):
        assert clone.cache == pairs.cache and clone.lock is not pairs.lock
        np.testing.assert_array_equal(clone(["drill"], ["makita drill"])["input_ids"],
                                      pairs(["drill"], ["makita drill"])["input_ids"])
