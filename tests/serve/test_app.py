"""The serving API through FastAPI's TestClient (and httpx for concurrency) on a tiny catalog.

Recall uses a hashed character-trigram encoder instead of MiniLM (fast, and it matches typos that
BM25 cannot); the variants are the builtin BM25 / dense scorers, slow stand-ins or a tiny model.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from leanrank.serve.app import create_app  # noqa: E402
from leanrank.serve.cascade import Catalog, Engine, HybridRecall, Recommender, load_variant  # noqa: E402
from leanrank.serve.config import ServeConfig  # noqa: E402
from leanrank.serve.privacy import UserHasher  # noqa: E402

TITLES = {
    "p01": "cordless drill 20v", "p02": "drill bits set", "p03": "cordless vacuum cleaner",
    "p04": "paint brush set", "p05": "paint roller kit", "p06": "garden hose 50 ft",
    "p07": "hammer drill corded", "p08": "led light bulb", "p09": "wood screws box",
    "p10": "circular saw blade", "p11": "safety glasses clear", "p12": "tape measure 25 ft",
    "p13": "ladder aluminum 6 ft", "p14": "extension cord outdoor", "p15": "work gloves leather",
    "p16": "wall anchors kit", "p17": "sanding sheets pack", "p18": "caulk gun", "p19": "pipe wrench",
    "p20": "shop vacuum wet dry",
}
SESSIONS = [["p01", "p02", "p07", "p10"], ["p04", "p05", "p17", "p16"], ["p01", "p02", "p11", "p15"],
            ["p06", "p14", "p13", "p08"], ["p02", "p01", "p09", "p16"]]
SECRET = b"test-secret-0123456789abcdef"
TOKEN = "admin-token-xyz"


class TrigramEncoder:
    """Unit vectors of hashed character trigrams (deterministic; a stand-in for MiniLM)."""

    def encode(self, texts):
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, text in enumerate(texts):
            s = f"  {text.lower()} "
            for j in range(len(s) - 2):
                out[i, zlib.crc32(s[j:j + 3].encode()) % 256] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class SlowScorer:
    """Sleeps per call, then prefers short titles."""

    def __init__(self, delay: float):
        self.delay = delay

    def score(self, queries, titles):
        time.sleep(self.delay)
        return np.array([-len(t) for t in titles], dtype=np.float32)


def make_config(tmp_path, **sections) -> ServeConfig:
    data = {"variants": {"a": "builtin:bm25", "b": "builtin:dense"},
            "recall": {"bm25_k": 8, "dense_k": 8, "rerank_n": 10},
            "limits": {"max_k": 10, "max_body_bytes": 2048, "max_query_chars": 64, "max_history": 20},
            "bandit": {"policy": "thompson", "seed": 0},
            "batching": {"max_batch": 4, "max_wait_ms": 2, "queue_size": 16, "deadline_ms": 5000},
            "paths": {"feedback_db": str(tmp_path / "fb.sqlite"), "bandit_state": str(tmp_path / "bandit.sqlite"),
                      "request_log": str(tmp_path / "requests.jsonl")}}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) and name != "variants" else value
    return ServeConfig.from_dict(data)


def make_engine(config: ServeConfig, scorers: dict | None = None, rec_model: bool = True) -> Engine:
    catalog = Catalog(dict(TITLES), [list(s) for s in SESSIONS], ["cordless drill", "paint brush"])
    recall = HybridRecall.build(TITLES, TrigramEncoder())
    variants = {name: load_variant(where, recall) for name, where in config.variants.items()}
    variants.update(scorers or {})
    model, item_ids = None, None
    if rec_model:
        import torch

        from leanrank.data.sequences import from_sequences
        from leanrank.models.seqrec import SeqRec, SeqRecConfig

        item_ids = from_sequences(SESSIONS, "t").item_ids
        torch.manual_seed(0)
        model = SeqRec(SeqRecConfig(n_items=len(item_ids) - 1, hidden=16, layers=1, heads=1, max_len=10))
    recommender = Recommender(catalog.titles, catalog.sessions, model, item_ids)
    return Engine(config, catalog, recall, recommender, variants, dict(config.variants))


def make_app(config: ServeConfig, scorers: dict | None = None, engine_factory=None):
    return create_app(config, hasher=UserHasher(SECRET),
                      engine_factory=engine_factory or (lambda: make_engine(config, scorers)),
                      environ={"LEANRANK_ADMIN_TOKEN": TOKEN})


def wait_ready(client, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready: {client.get('/readyz').json()}")


@pytest.fixture
def client(tmp_path):
    with TestClient(make_app(make_config(tmp_path))) as c:
        wait_ready(c)
        yield c


def test_search_returns_k_sorted_items_with_variant_request_id_and_timings(client):
    r = client.post("/search", json={"query": "cordless drill", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and body["variant"] in ("a", "b") and len(body["request_id"]) == 32
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert {"bm25_ms", "dense_ms", "fuse_ms", "queue_ms", "rerank_ms", "total_ms"} <= set(body["timings_ms"])
    assert all(it["id"] in TITLES and it["sources"] for it in body["items"])
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("payload", [
    {"query": "", "k": 3}, {"query": "   ", "k": 3}, {"query": "x" * 65, "k": 3}, {"query": "drill", "k": 0},
    {"query": "drill", "k": 11}, {"query": "drill", "k": "5"}, {"query": "drill", "surprise": 1},
    {"query": 7}, {"k": 3}, [1, 2],
])
def test_bad_search_input_is_422_with_a_json_reason(client, payload):
    r = client.post("/search", json=payload)
    assert r.status_code == 422 and "error" in r.json(), (payload, r.text)


def test_malformed_json_oversize_body_and_bad_bodies_elsewhere(client):
    r = client.post("/search", content=b'{"query": "drill", ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]
    r = client.post("/search", json={"query": "drill " * 1000, "k": 3})
    assert r.status_code == 413 and "bytes" in r.json()["error"]
    assert client.post("/recommend", json={"user_id": "u", "history": ["p01"] * 21}).status_code == 422
    assert client.post("/recommend", json={"user_id": "", "k": 3}).status_code == 422
    rid = client.post("/search", json={"query": "drill", "k": 2}).json()["request_id"]
    for bad in ({"request_id": rid, "item_id": "p01", "reward": "like"},
                {"request_id": rid, "item_id": "p99", "reward": "click"},
                {"request_id": rid, "item_id": "p01"}):
        r = client.post("/feedback", json=bad)
        assert r.status_code == 422 and r.json()["error"], bad


def test_feedback_unknown_404_known_persisted_and_bandit_learns(tmp_path):
    config = make_config(tmp_path)
    with TestClient(make_app(config)) as c:
        wait_ready(c)
        assert c.post("/feedback", json={"request_id": "f" * 32, "item_id": "p01", "reward": "click"}).status_code == 404
        before = c.get("/admin/bandit", headers={"Authorization": f"Bearer {TOKEN}"}).json()["arms"]
        search = c.post("/search", json={"query": "paint brush", "k": 3}).json()
        r = c.post("/feedback", json={"request_id": search["request_id"], "item_id": search["items"][0]["id"],
                                      "reward": "purchase"})
        assert r.status_code == 200 and r.json()["bandit_updated"] and r.json()["reward"] == 1.0
        after = c.get("/admin/bandit", headers={"Authorization": f"Bearer {TOKEN}"}).json()["arms"]
        variant = search["variant"]
        assert after[variant]["pulls"] == before[variant]["pulls"] + 1
    with sqlite3.connect(tmp_path / "fb.sqlite") as db:   # reopened after the server stopped
        rows = db.execute("SELECT request_id, event, reward, variant FROM feedback").fetchall()
    assert rows == [(search["request_id"], "purchase", 1.0, variant)]
    lines = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
    fb = [x for x in lines if x["type"] == "feedback"]
    assert fb[0]["variant"] == variant and fb[0]["reward"] == 1.0 and "context" in fb[0]


def test_readyz_is_503_until_models_are_loaded_and_warm(tmp_path):
    config = make_config(tmp_path)
    release = threading.Event()

    def slow_factory():
        release.wait(20)
        return make_engine(config, rec_model=False)

    with TestClient(make_app(config, engine_factory=slow_factory)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert c.get("/healthz").status_code == 200
        r = c.post("/search", json={"query": "drill", "k": 2})
        assert r.status_code == 503 and "Retry-After" in r.headers
        release.set()
        wait_ready(c)
        assert c.post("/search", json={"query": "drill", "k": 2}).status_code == 200


def test_metrics_expose_stage_histograms_queue_depth_shed_and_pulls(client):
    variant = client.post("/search", json={"query": "garden hose", "k": 2}).json()["variant"]
    text = client.get("/metrics").text
    assert f'leanrank_stage_seconds_bucket{{le="0.001",stage="rerank",variant="{variant}"}}' in text
    assert 'stage="dense"' in text and 'stage="total"' in text
    assert "leanrank_queue_depth" in text and "leanrank_shed_requests_total" in text
    assert f'leanrank_bandit_pulls_total{{variant="{variant}"}} 1.0' in text


def http_client_module():
    """httpx (installed here as ``httpx2``, the client Starlette's TestClient uses)."""
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    return httpx


def test_queue_full_sheds_503_with_retry_after_never_500(tmp_path):
    httpx = http_client_module()

    config = make_config(tmp_path, batching={"max_batch": 1, "queue_size": 1, "max_wait_ms": 0},
                         variants={"slow": "builtin:bm25"})
    app = make_app(config, scorers={"slow": SlowScorer(0.4)})

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.05)
                return await asyncio.gather(*[c.post("/search", json={"query": "drill", "k": 2})
                                              for _ in range(6)])

    responses = asyncio.run(main())
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers["Retry-After"] == "1" and r.json()["error"] for r in shed)


def test_deadline_passed_is_504_json(tmp_path):
    config = make_config(tmp_path, batching={"deadline_ms": 100}, variants={"slow": "builtin:bm25"})
    with TestClient(make_app(config, scorers={"slow": SlowScorer(0.5)})) as c:
        wait_ready(c)
        r = c.post("/search", json={"query": "drill", "k": 2})
        assert r.status_code == 504 and "deadline" in r.json()["error"]


def test_admin_reload_auth_broken_model_keeps_old_and_good_model_swaps(tmp_path, tiny_cross_encoder):
    config = make_config(tmp_path, variants={"a": "builtin:bm25"})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    good = tmp_path / "good"
    tiny_cross_encoder().save(good)
    with TestClient(make_app(config)) as c:
        wait_ready(c)
        assert c.post("/admin/reload", json={"variants": {"a": str(good)}}).status_code == 401
        r = c.post("/admin/reload", json={"variants": {"a": str(good)}}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 403
        r = c.post("/admin/reload", json={"variants": {"a": str(broken)}}, headers=auth)
        assert r.status_code == 422 and "old models still serving" in r.json()["error"]
        assert r.json()["serving"] == {"a": "builtin:bm25"}
        assert c.post("/admin/reload", json={"variants": {"zzz": str(good)}}, headers=auth).status_code == 422
        assert c.post("/search", json={"query": "drill", "k": 2}).status_code == 200
        assert c.get("/readyz").json()["variants"] == {"a": "builtin:bm25"}
        r = c.post("/admin/reload", json={"variants": {"a": str(good)}}, headers=auth)
        assert r.status_code == 200, r.text
        assert c.get("/readyz").json()["variants"] == {"a": str(good)}
        r = c.post("/search", json={"query": "drill", "k": 3})
        assert r.status_code == 200 and r.json()["variant"] == "a"


def test_recommend_cold_user_gets_popularity_and_unknown_history_is_reported(client):
    r = client.post("/recommend", json={"user_id": "newcomer", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["fallback"] == "popularity" and body["history_source"] == "none"
    assert [it["id"] for it in body["items"]] == ["p01", "p02", "p16"]   # most frequent in SESSIONS
    r = client.post("/recommend", json={"user_id": "u2", "history": ["p01", "nope", "p04"], "k": 4}).json()
    assert r["unknown_history"] == ["nope"] and r["fallback"] is None and len(r["items"]) == 4
    assert not {"p01", "p04"} & {it["id"] for it in r["items"]}   # seen items excluded
    only_unknown = client.post("/recommend", json={"user_id": "u3", "history": ["x1"], "k": 2}).json()
    assert only_unknown["fallback"] == "popularity" and only_unknown["unknown_history"] == ["x1"]


def test_feedback_builds_a_profile_used_by_recommend(client):
    s = client.post("/search", json={"query": "paint", "k": 2, "user_id": "carol"}).json()
    client.post("/feedback", json={"request_id": s["request_id"], "item_id": "p04", "reward": "click"})
    r = client.post("/recommend", json={"user_id": "carol", "k": 3}).json()
    assert r["history_source"] == "profile" and r["fallback"] is None
    assert "p04" not in {it["id"] for it in r["items"]}


def test_raw_user_id_never_reaches_logs_or_databases(tmp_path, caplog):
    raw = "alice-RAW-7731@example.com"
    config = make_config(tmp_path)
    caplog.set_level("DEBUG")
    with TestClient(make_app(config)) as c:
        wait_ready(c)
        s = c.post("/search", json={"query": "cordless drill", "k": 3, "user_id": raw}).json()
        c.post("/feedback", json={"request_id": s["request_id"], "item_id": s["items"][0]["id"], "reward": "click"})
        c.post("/recommend", json={"user_id": raw, "k": 2})
        c.post("/recommend", json={"user_id": raw, "history": ["p01", "zz"], "k": 2})
        c.post("/recommend", json={"user_id": raw * 10, "k": 2})   # rejected: too long
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert any(p.name.startswith("fb.sqlite") for p in files) and (tmp_path / "requests.jsonl").stat().st_size
    for path in files:
        data = path.read_bytes()
        assert raw.encode() not in data and b"alice" not in data, path
        assert b"cordless drill" not in data or path.suffix != ".jsonl"   # queries not logged by default
    assert "alice" not in caplog.text
    hashed = UserHasher(SECRET).hash(raw)
    assert hashed.encode() in (tmp_path / "requests.jsonl").read_bytes()
