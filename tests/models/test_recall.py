"""Recall stages (BM25, the packaged MiniLM bi-encoder + FAISS), reference scorers, batching, atomic io."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from leanrank.core.batching import length_bucketed_batches
from leanrank.core.io import atomic_path, write_json, write_text
from leanrank.eval.baselines import RandomScorer
from leanrank.models.bm25 import BM25Index, BM25Scorer

TITLES = {
    "p1": "DeWalt 20V cordless power drill kit",
    "p2": "drill bit set 29 piece",
    "p3": "kitchen faucet chrome",
    "p4": "bathroom sink faucet",
    "p5": "garden hose 50 ft",
    "p6": "paint brush set",
}


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ BM25


@pytest.fixture(scope="module")
def bm25() -> BM25Index:
    return BM25Index.build(TITLES)


def test_bm25_search_ranks_the_lexical_match_first(bm25):
    hits = bm25.search(["cordless drill", "faucet", "garden hose"], k=10)
    assert len(hits) == 3
    assert hits[0][0][0] == "p1"          # both words
    assert [p for p, _ in hits[0]] == ["p1", "p2"]   # p2 has "drill" only; nothing else matches
    assert {p for p, _ in hits[1]} == {"p3", "p4"}
    assert [p for p, _ in hits[2]] == ["p5"]
    for row in hits:
        scores = [s for _, s in row]
        assert all(s > 0 for s in scores)
        assert scores == sorted(scores, reverse=True)


def test_bm25_search_leaves_out_zero_scores_and_caps_k(bm25):
    assert bm25.search(["zebra unicorn"], k=10) == [[]]
    assert bm25.search(["the and of"], k=10) == [[]]  # stopwords only
    assert len(bm25.search(["drill"], k=1)[0]) == 1
    assert len(bm25.search(["set"], k=100)[0]) == 2   # k above the catalog size is fine


def test_bm25_score_equals_search_scores(bm25):
    for query in ("cordless drill", "faucet", "paint set"):
        hits = bm25.search([query], k=len(TITLES))[0]
        ids = [p for p, _ in hits]
        assert np.allclose(bm25.score(query, ids), [s for _, s in hits], rtol=1e-6)
        others = [p for p in TITLES if p not in ids]
        assert np.all(bm25.score(query, others) == 0)


def test_bm25_search_agrees_with_bm25s_retrieve_and_breaks_ties_by_catalog_order():
    import bm25s

    titles = {f"p{i}": f"{w} drill" if i % 3 else f"{w} cordless drill bit" for i, w in
              enumerate(["red", "blue", "green", "black", "white", "steel", "brass", "oak", "pine"] * 4)}
    index = BM25Index.build(titles)
    for query, k in (("cordless drill", 7), ("drill", 36), ("oak bit", 5)):
        hits = index.search([query], k=k)[0]
        docs, scores = index.retriever.retrieve(bm25s.tokenize([query], stopwords="en", show_progress=False),
                                                k=k, show_progress=False)
        assert np.allclose([s for _, s in hits], [s for s in scores[0] if s > 0], rtol=1e-6)   # same top-k scores
        for (p, s), (q, t) in zip(hits, hits[1:]):
            assert s > t or (s == t and index.ids.index(p) < index.ids.index(q))


def test_bm25_scorer_matches_index_and_unknown_title_is_zero(bm25):
    scorer = BM25Scorer(bm25, TITLES)
    queries = ["cordless drill", "cordless drill", "faucet", "faucet", "cordless drill"]
    pids = ["p1", "p2", "p3", "p1", "p6"]
    got = scorer.score(queries, [TITLES[p] for p in pids])
    want = [bm25.score(q, [p])[0] for q, p in zip(queries, pids)]
    assert got.shape == (5,)
    assert np.allclose(got, want, rtol=1e-6)
    assert got[0] > got[1] > 0 and got[3] == 0 and got[4] == 0
    assert scorer.score(["cordless drill"], ["a cordless drill that is not in the catalog"])[0] == 0.0
    assert scorer.score([], []).shape == (0,)


# ------------------------------------------------------------------ dense (the packaged MiniLM)


@pytest.fixture(scope="module")
def encoder():
    from leanrank.models.bi_encoder import BiEncoder

    return BiEncoder.from_pretrained()


DENSE_TITLES = {"d1": "cordless drill kit", "d2": "kitchen faucet", "d3": "garden hose"}


def test_bi_encoder_embeddings_are_unit_norm(encoder):
    texts = ["power drill", "cordless drill kit", "kitchen faucet", "a much longer title " * 3]
    emb = encoder.encode(texts, batch_size=2)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # input order is kept although batches are bucketed by length
    single = np.stack([encoder.encode([t])[0] for t in texts])
    assert np.allclose(emb, single, atol=1e-5)


def test_bi_encoder_is_semantic(encoder):
    q, drill, faucet = encoder.encode(["power drill", "cordless drill kit", "kitchen faucet"])
    assert q @ drill > q @ faucet + 0.1


def test_dense_index_search(encoder):
    from leanrank.models.bi_encoder import DenseIndex

    index = DenseIndex.build(encoder, DENSE_TITLES)
    queries = encoder.encode(["power drill", "sink tap", "watering the lawn"])
    hits = index.search(queries, k=10)
    assert [row[0][0] for row in hits] == ["d1", "d2", "d3"]
    assert all(len(row) == 3 for row in hits)  # k capped at the catalog size
    titles_emb = encoder.encode(list(DENSE_TITLES.values()))
    for qv, row in zip(queries, hits):
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        for pid, s in row:
            assert s == pytest.approx(float(titles_emb[list(DENSE_TITLES).index(pid)] @ qv), abs=1e-5)


def test_dense_scorer_is_the_cosine_of_encodings(encoder):
    from leanrank.models.bi_encoder import DenseScorer

    queries = ["power drill", "power drill", "kitchen sink", "power drill"]
    titles = ["cordless drill kit", "kitchen faucet", "kitchen faucet", "cordless drill kit"]
    got = DenseScorer(encoder).score(queries, titles)
    eq, et = encoder.encode(queries), encoder.encode(titles)
    want = (eq * et).sum(1)
    assert got.shape == (4,)
    assert np.allclose(got, want, atol=1e-5)
    assert got[0] == pytest.approx(got[3]) and got[0] > got[1]


# ------------------------------------------------------------------ random baseline


def test_random_scorer_is_seeded():
    q, t = ["q"] * 50, ["t"] * 50
    a, b = RandomScorer(seed=7).score(q, t), RandomScorer(seed=7).score(q, t)
    assert a.shape == (50,) and np.array_equal(a, b)
    assert np.all((a >= 0) & (a < 1)) and len(np.unique(a)) == 50
    assert not np.array_equal(a, RandomScorer(seed=8).score(q, t))
    # one scorer is a stream: calls go on from where the last stopped, reproducibly
    s1, s2 = RandomScorer(seed=7), RandomScorer(seed=7)
    assert np.array_equal(np.concatenate([s1.score(q[:20], t[:20]), s1.score(q[20:], t[20:])]),
                          s2.score(q, t))


# ------------------------------------------------------------------ length-bucketed batching


LENGTHS = [int(x) for x in np.random.default_rng(0).integers(1, 200, size=257)]


def flat(batches):
    return [i for b in batches for i in b]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 7, 32, 300])
def test_batches_cover_every_index_once(shuffle, batch_size):
    batches = length_bucketed_batches(LENGTHS, batch_size, shuffle=shuffle, seed=3, bucket_factor=2)
    assert sorted(flat(batches)) == list(range(len(LENGTHS)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert sum(len(b) < batch_size for b in batches) <= (1 if not shuffle else -(-len(LENGTHS) // (batch_size * 2)))


def test_batches_without_shuffle_are_sorted_by_length():
    batches = length_bucketed_batches(LENGTHS, 16)
    order = flat(batches)
    assert [LENGTHS[i] for i in order] == sorted(LENGTHS)
    assert [len(b) for b in batches] == [16] * 16 + [1]
    assert length_bucketed_batches([5, 1, 3, 2], 2) == [[1, 3], [2, 0]]
    assert length_bucketed_batches([], 4) == []


def test_batches_with_shuffle_are_deterministic_and_bucketed():
    a = length_bucketed_batches(LENGTHS, 8, shuffle=True, seed=1, bucket_factor=4)
    assert a == length_bucketed_batches(LENGTHS, 8, shuffle=True, seed=1, bucket_factor=4)
    assert a != length_bucketed_batches(LENGTHS, 8, shuffle=True, seed=2, bucket_factor=4)
    assert flat(a) != flat(length_bucketed_batches(LENGTHS, 8))  # not simply the sorted order
    for b in a:  # each batch sorted by length (cut from a sorted window)
        assert [LENGTHS[i] for i in b] == sorted(LENGTHS[i] for i in b)
    # bucketing keeps padding well below that of random batches of the same size
    def padding(batches):
        return sum(max(LENGTHS[i] for i in b) * len(b) - sum(LENGTHS[i] for i in b) for b in batches)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(LENGTHS)).tolist()
    random_batches = [perm[i : i + 8] for i in range(0, len(perm), 8)]
    assert padding(a) < 0.5 * padding(random_batches)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_below_one_raises(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        length_bucketed_batches([1, 2, 3], batch_size)


# ------------------------------------------------------------------ atomic io


def test_atomic_path_keeps_original_on_exception(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("original", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("half written", encoding="utf-8")
        raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "original"
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_write_json_failure_leaves_original_and_no_temp(tmp_path):
    target = tmp_path / "run.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(target, {"a": object()})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["run.json"]


def test_atomic_writes_replace_and_create_parents(tmp_path):
    target = tmp_path / "deep" / "er" / "out.json"
    write_json(target, {"x": np.float32(0.5), "v": np.arange(3), "p": tmp_path})
    assert json.loads(target.read_text(encoding="utf-8")) == {"x": 0.5, "v": [0, 1, 2], "p": str(tmp_path)}
    write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert os.listdir(target.parent) == ["out.json"]


def test_bm25_stopword_only_query_scores_zero_instead_of_crashing():
    titles = {"a": "cordless drill", "b": "paint brush"}
    index = BM25Index.build(titles)
    assert BM25Scorer(index, titles).score(["the of", "drill"], ["cordless drill", "cordless drill"])[0] == 0.0
    assert index.score("the", ["a", "b"]).tolist() == [0.0, 0.0]
    assert index.search(["the"], k=2) == [[]]


def test_scalar_quantized_dense_index_keeps_the_ranking():
    import numpy as np
    import pytest

    from leanrank.core.errors import LeanrankError
    from leanrank.models.bi_encoder import DenseIndex

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i}" for i in range(500)]
    query = vectors[:3] + 0.1 * rng.normal(size=(3, 32)).astype(np.float32)
    exact = DenseIndex.from_embeddings(ids, vectors).search(query, k=50)
    for kind, need in (("fp16", 0.98), ("sq8", 0.9)):
        got = DenseIndex.from_embeddings(ids, vectors, kind).search(query, k=50)
        for a, b in zip(exact, got):
            assert a[0][0] == b[0][0]                               # the nearest is the nearest
            assert len({p for p, _ in a} & {p for p, _ in b}) / 50 >= need
    with pytest.raises(LeanrankError, match="dense index"):
        DenseIndex.from_embeddings(ids, vectors, "hnsw")


def test_ivf_index_scans_part_of_the_catalog_and_finds_the_neighbours():
    import numpy as np
    import pytest

    from leanrank.core.errors import LeanrankError
    from leanrank.models.bi_encoder import DenseIndex

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, 2000)] + 0.3 * rng.normal(size=(2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i}" for i in range(2000)]
    query = vectors[:5] + 0.05 * rng.normal(size=(5, 32)).astype(np.float32)
    exact = DenseIndex.from_embeddings(ids, vectors).search(query, k=20)
    ivf = DenseIndex.from_embeddings(ids, vectors, "ivf", nprobe=8)
    assert ivf.index.nlist == 51 and ivf.index.nprobe == 8              # min(4·√2000, 2000 // 39)
    got = ivf.search(query, k=20)
    overlap = np.mean([len({p for p, _ in a} & {p for p, _ in b}) / 20 for a, b in zip(exact, got)])
    assert overlap >= 0.9 and all(a[0][0] == b[0][0] for a, b in zip(exact, got))
    one_cell = DenseIndex.from_embeddings(ids, vectors, "ivf", nprobe=1).search(query, k=200)
    assert all(len(hits) < 200 for hits in one_cell)    # one cell of ~40 vectors: it really scans a part
    assert got == DenseIndex.from_embeddings(ids, vectors, "ivf", nprobe=8).search(query, k=20)  # seeded
    with pytest.raises(LeanrankError, match="nprobe"):
        DenseIndex.from_embeddings(ids, vectors, "ivf", nprobe=0)
