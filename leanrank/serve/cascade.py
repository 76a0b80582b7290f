"""The serving cascade: catalog → hybrid recall (BM25 + bi-encoder FAISS, fused by reciprocal rank)
→ rerank by a variant; next-item recommendation with a popularity fallback; model loading,
validation on a small check set and atomic swaps for ``/admin/reload``.

A variant is a model folder (``leanrank.runtime.loading.load_scorer``: torch or ONNX) or a
builtin scorer: ``builtin:bm25`` / ``builtin:dense`` rerank by the recall scores themselves.

>>> recall = HybridRecall.build({"p1": "cordless drill", "p2": "paint brush"}, encoder=None)
>>> recall.recall("drill", bm25_k=5, dense_k=0, rerank_n=5).ids
['p1']
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanrank.core.errors import LeanrankError
from leanrank.core.io import atomic_path, weights_digest
from leanrank.serve.config import ServeConfig


@dataclass
class Catalog:
    """Product id → title, user sessions (popularity, rec item map) and queries for checks."""

    titles: dict[str, str]
    sessions: list[list[str]] = field(default_factory=list)
    check_queries: list[str] = field(default_factory=list)


def load_catalog(config: ServeConfig) -> Catalog:
    c = config.catalog
    n = config.admin.check_queries
    if c.source == "synthetic":
        from leanrank.data.synthetic import SyntheticConfig, make_catalog

        cat = make_catalog(SyntheticConfig(n_products=c.n_products) if c.n_products else SyntheticConfig())
        return Catalog(dict(cat.search.titles), [list(s) for s in cat.sessions], cat.search.queries()[:n])
    from leanrank.data.registry import load_search_dataset

    ds = load_search_dataset("homedepot", c.data_dir)
    return Catalog(dict(ds.titles), [], ds.queries()[:n])


@dataclass
class Recalled:
    ids: list[str]                                  # fused, best first, at most rerank_n
    bm25: dict[str, float]                          # id → BM25 score (BM25 candidates)
    dense: dict[str, float]                         # id → cosine (dense candidates)
    timings_ms: dict[str, float]

    def sources(self, pid: str) -> list[str]:
        return [name for name, got in (("bm25", self.bm25), ("dense", self.dense)) if pid in got]


class HybridRecall:
    """BM25 (bm25s) and, given an encoder with ``encode(texts) -> unit vectors``, an exact FAISS index."""

    def __init__(self, titles: Mapping[str, str], bm25, encoder=None, dense=None, rrf_k: int = 60):
        self.titles, self.bm25, self.encoder, self.dense, self.rrf_k = dict(titles), bm25, encoder, dense, rrf_k
        self.title_cache: dict[str, np.ndarray] = {}
        if dense is not None:
            vectors = dense.index.reconstruct_n(0, len(dense.ids))
            self.title_cache = {self.titles[pid]: vectors[i] for i, pid in enumerate(dense.ids)}

    @classmethod
    def build(cls, titles: Mapping[str, str], encoder=None, rrf_k: int = 60,
              cache_dir: str | Path | None = None, log=print, index: str = "flat",
              nprobe: int = 32) -> HybridRecall:
        """BM25 + (with ``encoder``) a FAISS index of the catalog (``index``: flat = exact, fp16, sq8,
        ivf with ``nprobe``; see ``DenseIndex.from_embeddings``); the catalog vectors are
        read from ``cache_dir`` when an earlier start with the same encoder and titles wrote them."""
        from leanrank.models.bm25 import BM25Index

        bm25 = BM25Index.build(titles)
        dense = None
        if encoder is not None:
            from leanrank.models.bi_encoder import DenseIndex

            ids = list(titles)
            vectors = catalog_embeddings(encoder, [titles[i] for i in ids], cache_dir, log)
            dense = DenseIndex.from_embeddings(ids, vectors, index, nprobe)
        return cls(titles, bm25, encoder, dense, rrf_k)

    def recall(self, query: str, bm25_k: int, dense_k: int, rerank_n: int) -> Recalled:
        t0 = time.perf_counter()
        lexical = self.bm25.search([query], k=bm25_k)[0]
        t1 = time.perf_counter()
        semantic: list[tuple[str, float]] = []
        if self.dense is not None and dense_k > 0:
            semantic = self.dense.search(np.asarray(self.encoder.encode([query])), k=dense_k)[0]
        t2 = time.perf_counter()
        fused: dict[str, float] = {}
        for hits in (lexical, semantic):
            for rank, (pid, _) in enumerate(hits):
                fused[pid] = fused.get(pid, 0.0) + 1.0 / (self.rrf_k + rank + 1)
        ids = sorted(fused, key=lambda p: -fused[p])[:rerank_n]
        t3 = time.perf_counter()
        return Recalled(ids, dict(lexical), dict(semantic),
                        {"bm25_ms": (t1 - t0) * 1e3, "dense_ms": (t2 - t1) * 1e3, "fuse_ms": (t3 - t2) * 1e3})


def catalog_embeddings(encoder, texts: Sequence[str], cache_dir: str | Path | None, log=print) -> np.ndarray:
    """``encoder.encode(texts)``, cached as ``cache_dir/<key>.npy``; the key hashes the encoder's
    weights file(s) (path, size, mtime), its max length and every text, so any change re-encodes."""
    digest = weights_digest(getattr(encoder, "source", None))
    if cache_dir is None or digest is None:     # an encoder we cannot identify is never cached
        return np.asarray(encoder.encode(texts), dtype=np.float32)
    digest.update(f"{type(encoder).__name__}|{getattr(encoder, 'max_length', '')}|{len(texts)}".encode())
    for t in texts:
        digest.update(t.encode("utf-8", "surrogatepass") + b"\0")
    path = Path(cache_dir) / f"catalog-{digest.hexdigest()[:24]}.npy"
    if path.exists():
        vectors = np.load(path, allow_pickle=False)
        if vectors.shape[0] == len(texts):
            log(f"catalog embeddings from {path}")
            return vectors
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)
    log(f"catalog embeddings cached in {path}")
    return vectors


class Recommender:
    """Next items from a SeqRec model, or by popularity for cold users (no usable history)."""

    def __init__(self, titles: Mapping[str, str], sessions: Sequence[Sequence[str]], model=None,
                 item_ids: Sequence[str] | None = None, exclude_seen: bool = True):
        self.titles, self.model, self.exclude_seen = titles, model, exclude_seen
        counts = Counter(pid for s in sessions for pid in s if pid in titles)
        self.popular = [p for p, _ in counts.most_common()] + [p for p in titles if p not in counts]
        self.item_ids = list(item_ids or [])
        self.index = {pid: i for i, pid in enumerate(self.item_ids) if i > 0}

    def recommend(self, history: Sequence[str], k: int) -> tuple[list[str], str | None]:
        """(product ids, fallback) where fallback is None (model) or ``"popularity"``."""
        known = [self.index[p] for p in history if p in self.index]
        if self.model is not None and known:
            ids = self.model.recommend(known, k=k, exclude_seen=self.exclude_seen)
            return [self.item_ids[i] for i in ids], None
        seen = set(history) if self.exclude_seen else set()
        return [p for p in self.popular if p not in seen][:k], "popularity"


def load_recommender(config: ServeConfig, catalog: Catalog) -> Recommender:
    model_dir = config.rec.model_dir
    if model_dir is None:
        return Recommender(catalog.titles, catalog.sessions, exclude_seen=config.rec.exclude_seen)
    from leanrank.models.seqrec import SeqRec

    model = SeqRec.load(model_dir)
    mapping = Path(model_dir) / "item_ids.json"
    if mapping.is_file():
        item_ids = json.loads(mapping.read_text(encoding="utf-8"))
    else:  # trained with `leanrank train rec --dataset synthetic`: the same re-indexing of the sessions
        from leanrank.data.sequences import from_sequences

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            item_ids = from_sequences(catalog.sessions, "catalog").item_ids if catalog.sessions else [""]
    if len(item_ids) != model.config.n_items + 1:
        raise LeanrankError(f"{model_dir}: the model knows {model.config.n_items} items but the catalog's item "
                            f"map has {len(item_ids) - 1} (add item_ids.json: index → product id)")
    return Recommender(catalog.titles, catalog.sessions, model, item_ids, config.rec.exclude_seen)


def load_variant(where: str, recall: HybridRecall):
    """A scorer for a variant spec (model folder or builtin); ``LeanrankError`` when it cannot load."""
    if where == "builtin:bm25":
        from leanrank.models.bm25 import BM25Scorer

        return BM25Scorer(recall.bm25, recall.titles)
    if where == "builtin:dense":
        from leanrank.models.bi_encoder import DenseScorer

        return DenseScorer(recall.encoder, recall.title_cache)
    from leanrank.runtime.loading import load_scorer

    try:
        return load_scorer(where)
    except LeanrankError:
        raise
    except Exception as exc:  # a broken folder: corrupt weights, missing files, wrong config
        raise LeanrankError(f"{where}: cannot load model ({type(exc).__name__}: {exc})") from exc


def check_variant(name: str, scorer, pairs: Sequence[tuple[str, str]]) -> float:
    """Score the check pairs; finite scores of the right shape or a ``LeanrankError``. Returns seconds."""
    t0 = time.perf_counter()
    try:
        scores = np.asarray(scorer.score([q for q, _ in pairs], [t for _, t in pairs]), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any failure on the check set rejects the model
        raise LeanrankError(f"variant {name!r} failed the check set ({type(exc).__name__}: {exc})") from exc
    if scores.shape != (len(pairs),) or not np.isfinite(scores).all():
        raise LeanrankError(f"variant {name!r} failed the check set: expected {len(pairs)} finite scores, "
                            f"got shape {scores.shape}")
    return time.perf_counter() - t0


class Engine:
    """Everything a request needs; ``variants`` is replaced as a whole (atomic swap) on reload."""

    def __init__(self, config: ServeConfig, catalog: Catalog, recall: HybridRecall, recommender: Recommender,
                 variants: dict[str, object], variant_dirs: dict[str, str]):
        self.config, self.catalog, self.recall_index, self.recommender = config, catalog, recall, recommender
        self.variants, self.variant_dirs = dict(variants), dict(variant_dirs)
        self._reload_lock = threading.Lock()
        r = config.recall
        self.check_pairs = [(q, catalog.titles[p]) for q in catalog.check_queries or ["product"]
                            for p in recall.recall(q, r.bm25_k, r.dense_k, r.rerank_n).ids[:4]]
        for name, scorer in self.variants.items():
            check_variant(name, scorer, self.check_pairs)

    def scorer(self, variant: str):
        return self.variants[variant]

    def recall(self, query: str) -> Recalled:
        r = self.config.recall
        return self.recall_index.recall(query, r.bm25_k, r.dense_k, r.rerank_n)

    def warm(self) -> None:
        """One pass through every stage so the first real request does not pay for lazy init."""
        for query in self.catalog.check_queries[:2] or ["product"]:
            self.recall(query)
        for name, scorer in self.variants.items():
            check_variant(name, scorer, self.check_pairs)
        self.recommender.recommend(list(self.catalog.titles)[:2], 3)

    def reload(self, dirs: Mapping[str, str]) -> dict[str, float]:
        """Load, check and then swap the named variants together; on any failure nothing changes."""
        unknown = sorted(set(dirs) - set(self.variants))
        if unknown:
            raise LeanrankError(f"unknown variant {unknown[0]!r}; variants: {', '.join(self.variants)}")
        with self._reload_lock:
            loaded, seconds = {}, {}
            for name, where in dirs.items():
                scorer = load_variant(str(where), self.recall_index)
                seconds[name] = check_variant(name, scorer, self.check_pairs)
                loaded[name] = scorer
            self.variants = {**self.variants, **loaded}  # one reference assignment: the swap
            self.variant_dirs = {**self.variant_dirs, **{k: str(v) for k, v in dirs.items()}}
        return seconds


def build_engine(config: ServeConfig, encoder=None, log=print) -> Engine:
    """Catalog, recall indexes, variants (checked) and recommender; ``encoder`` defaults to the
    bi-encoder of ``recall.dense_model`` when ``dense_k > 0``."""
    catalog = load_catalog(config)
    if config.bootstrap.enabled:
        bootstrap_demo_models(config, log)
    if encoder is None and config.recall.dense_k > 0:
        from leanrank.models.bi_encoder import BiEncoder

        encoder = BiEncoder.from_pretrained(config.recall.dense_model)
        if config.recall.dense_runtime.startswith("onnx"):
            from leanrank.runtime.bi_encoder_onnx import onnx_bi_encoder

            texts = list(catalog.titles.values())[:64] + catalog.check_queries[:64]
            encoder = onnx_bi_encoder(encoder, config.recall.encoder_cache, texts, config.recall.encoder_threads,
                                      log=log, int8=config.recall.dense_runtime == "onnx-int8")
    log(f"indexing {len(catalog.titles)} products (BM25{' + dense' if encoder is not None else ''}) ...")
    recall = HybridRecall.build(catalog.titles, encoder, config.recall.rrf_k,
                                config.recall.embedding_cache if encoder is not None else None, log,
                                config.recall.dense_index, config.recall.dense_nprobe)
    if recall.dense is not None:
        import faiss

        faiss.omp_set_num_threads(config.recall.faiss_threads)
    variants = {name: load_variant(where, recall) for name, where in config.variants.items()}
    return Engine(config, catalog, recall, load_recommender(config, catalog), variants, dict(config.variants))


def bootstrap_demo_models(config: ServeConfig, log=print) -> None:
    """Demo (synthetic catalog): train each missing variant folder ``RUN/model`` as a small MiniLM-L6
    teacher (``bootstrap.search_steps`` steps) and a missing ``rec.model_dir`` as a 1-layer SASRec
    (``bootstrap.rec_seconds``). Existing folders are reused, so only the first start pays."""
    b = config.bootstrap
    for name, where in config.variants.items():
        target = Path(where)
        if where.startswith("builtin:") or target.is_dir():
            continue
        if target.name != "model":
            raise LeanrankError(f"variants.{name}: bootstrap trains into RUN/model; {where} does not end in /model")
        from leanrank.data.synthetic import make_catalog
        from leanrank.train.fit import TrainConfig
        from leanrank.train.search import SearchTrainSetup, train_search

        log(f"bootstrap: training variant {name!r} into {target} ({b.search_steps} steps, <= {b.search_seconds:.0f} s)")
        train_search(make_catalog().search.split(), target.parent,
                     TrainConfig(epochs=1, max_steps=b.search_steps, lr=8e-5, batch_size=32,
                                 max_seconds=b.search_seconds, checkpoint_every=10_000),
                     SearchTrainSetup(max_length=32, valid_queries=30, bm25_negatives=3), progress=False)
    rec_dir = config.rec.model_dir
    if rec_dir is not None and not Path(rec_dir).is_dir():
        if Path(rec_dir).name != "model":
            raise LeanrankError(f"rec.model_dir: bootstrap trains into RUN/model; {rec_dir} does not end in /model")
        from leanrank.cli_rec import train_rec_command

        log(f"bootstrap: training a SASRec recommender into {rec_dir} (<= {b.rec_seconds:.0f} s)")
        train_rec_command("synthetic", None, Path(rec_dir).parent, {"layers": 1, "hidden": 32, "heads": 2},
                          {"epochs": 50, "max_seconds": b.rec_seconds, "patience": 2}, log=log)
