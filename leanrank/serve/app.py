"""The ``leanrank serve`` HTTP API (FastAPI): /search, /recommend, /feedback, /healthz, /readyz,
/metrics and /admin/reload.

Models load and warm in the background after start-up: ``/healthz`` answers at once, ``/readyz``
(and every model endpoint) answers 503 until the engine is warm. Bad input → 413/422 with a JSON
``{"error": ...}``; overload → 503 + ``Retry-After``; a passed deadline → 504. User ids are
HMAC-hashed at the edge (``leanrank.serve.privacy``) and never stored, logged or passed on raw.

>>> app = create_app(config, engine_factory=lambda: build_engine(config))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from leanrank.core.errors import LeanrankError
from leanrank.serve.batching import DeadlineExceeded, MicroBatcher, Overloaded
from leanrank.serve.config import ServeConfig
from leanrank.serve.feedback_store import FeedbackStore, RequestLog
from leanrank.serve.privacy import UserHasher, query_for_log

log = logging.getLogger("leanrank.serve")
STAGES = ("bm25", "dense", "fuse", "queue", "rerank", "total")


class ApiError(Exception):
    """An answer other than 200: ``status``, a one-line reason, optional headers and extra fields."""

    def __init__(self, status: int, reason: str, headers: dict | None = None, **extra):
        super().__init__(reason)
        self.status, self.reason, self.headers, self.extra = status, reason, headers or {}, extra


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchBody(_Strict):
    query: str
    k: int = 10
    user_id: str | None = None


class RecommendBody(_Strict):
    user_id: str
    history: list[str] | None = None
    k: int = 10


class FeedbackBody(_Strict):
    request_id: str = Field(max_length=64)
    item_id: str
    reward: str = Field(max_length=64)   # an event name of feedback.rewards (click, add_to_cart, purchase)


class ReloadBody(_Strict):
    variants: dict[str, str]


class Metrics:
    """Prometheus metrics on a registry of their own (several apps can live in one process)."""

    def __init__(self, depth: Callable[[], float]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        buckets = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
        self.stage = Histogram("leanrank_stage_seconds", "Latency per stage and variant", ["stage", "variant"],
                               buckets=buckets, registry=r)
        self.request = Histogram("leanrank_request_seconds", "Request latency per endpoint", ["endpoint"],
                                 buckets=buckets, registry=r)
        self.responses = Counter("leanrank_responses_total", "Responses by endpoint and status",
                                 ["endpoint", "status"], registry=r)
        self.shed = Counter("leanrank_shed_requests_total", "Requests shed (503/504)", ["reason"], registry=r)
        self.pulls = Counter("leanrank_bandit_pulls_total", "Bandit arm pulls", ["variant"], registry=r)
        self.rewards = Counter("leanrank_bandit_reward_total", "Sum of rewards per variant", ["variant"], registry=r)
        self.feedback = Counter("leanrank_feedback_total", "Acknowledged feedback by event", ["event"], registry=r)
        self.batch = Histogram("leanrank_rerank_batch_size", "Requests per rerank batch", ["variant"],
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.queue = Gauge("leanrank_queue_depth", "Rerank requests waiting", registry=r)
        self.queue.set_function(depth)
        self.ready = Gauge("leanrank_ready", "1 once models are loaded and warm", registry=r)


class ServeState:
    """Everything the routes share; built by ``create_app``."""

    def __init__(self, config: ServeConfig, hasher: UserHasher, engine_factory: Callable[[], object],
                 bandit_factory: Callable[[], object] | None = None):
        self.config, self.hasher, self.engine_factory = config, hasher, engine_factory
        self.bandit_factory = bandit_factory or self._default_bandit
        self.engine = None
        self.bandit = None
        self.ready = False
        self.load_error: str | None = None
        self.in_flight = 0
        b = config.batching
        self.batcher = MicroBatcher(lambda v: self.engine.scorer(v), b.max_batch, b.max_wait_ms, b.queue_size,
                                    on_batch=self._on_batch)
        self.metrics = Metrics(lambda: self.batcher.depth)
        self.store: FeedbackStore | None = None
        self.request_log: RequestLog | None = None
        self._loader: asyncio.Task | None = None

    def _default_bandit(self):
        from leanrank.serve.bandit import make_bandit
        from leanrank.serve.bandit_store import SQLiteStore

        return make_bandit(self.config.bandit_config(), SQLiteStore(self.config.paths.bandit_state))

    def _on_batch(self, variant: str, size: int, seconds: float) -> None:
        self.metrics.batch.labels(variant).observe(size)

    def _load(self) -> None:
        t0 = time.perf_counter()
        engine = self.engine_factory()
        bandit = self.bandit_factory()
        engine.warm()
        self.engine, self.bandit = engine, bandit
        log.info("models loaded and warm in %.1f s; variants: %s", time.perf_counter() - t0, ", ".join(engine.variants))

    async def start(self) -> None:
        p = self.config.paths
        self.store = await asyncio.to_thread(FeedbackStore, p.feedback_db)
        self.request_log = RequestLog(p.request_log)
        self.batcher.start()
        self._loader = asyncio.get_running_loop().create_task(self._load_in_background())

    async def _load_in_background(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, the process keeps answering
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading models failed: %s", self.load_error)
            return
        self.ready = True
        self.metrics.ready.set(1)

    async def stop(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        await self.batcher.stop()
        close_bandit = getattr(getattr(self.bandit, "store", None), "close", None)
        if close_bandit is not None:
            close_bandit()
        if self.store is not None:
            self.store.close()
        if self.request_log is not None:
            self.request_log.close()

    def require_ready(self) -> None:
        if not self.ready:
            self.metrics.shed.labels("not_ready").inc()
            raise ApiError(503, self.load_error and f"models failed to load: {self.load_error}"
                           or "models are loading", {"Retry-After": str(self.config.batching.retry_after_s)})

    def overloaded(self, reason: str) -> ApiError:
        self.metrics.shed.labels("queue_full").inc()
        return ApiError(503, reason, {"Retry-After": str(self.config.batching.retry_after_s)})


def create_app(config: ServeConfig, hasher: UserHasher | None = None,
               engine_factory: Callable[[], object] | None = None,
               bandit_factory: Callable[[], object] | None = None, environ: dict | None = None) -> FastAPI:
    """The app; ``engine_factory`` (default ``build_engine(config)``) and ``bandit_factory`` (default
    ``make_bandit`` on the SQLite state file) run in the background loader."""
    from leanrank.serve.privacy import hasher_from_env

    env = os.environ if environ is None else environ
    hasher = hasher or hasher_from_env(config.privacy, env)
    if engine_factory is None:
        from leanrank.serve.cascade import build_engine

        def engine_factory():
            return build_engine(config, log=log.info)

    state = ServeState(config, hasher, engine_factory, bandit_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(title="leanrank serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state
    _install_errors(app, state)
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_body_bytes)

    _add_routes(app, state, env)
    return app


def _install_errors(app: FastAPI, state: ServeState) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.reason, **exc.extra}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]  # never echo the input: it may hold a raw user id
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return JSONResponse({"error": "internal error"}, status_code=500)


class BodyLimit:
    """Pure ASGI middleware: bodies over ``max_bytes`` (declared or streamed) → 413 JSON."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _too_large(send, self.max_bytes)
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    response = JSONResponse({"error": f"request body over {limit} bytes"}, status_code=413)
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_token(env: dict, token_env: str, authorization: str | None) -> None:
    """401 without a bearer token, 403 with a wrong one (or when the server has none set)."""
    if not authorization or not authorization.startswith("Bearer "):
        raise ApiError(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    expected = env.get(token_env, "")
    if not expected:
        raise ApiError(403, f"admin endpoints are disabled: ${token_env} is not set on the server")
    if not hmac.compare_digest(authorization[len("Bearer "):].encode(), expected.encode()):
        raise ApiError(403, "wrong bearer token")


def query_log_fields(config: ServeConfig, query: str) -> dict:
    return query_for_log(query, config.privacy.log_queries)


def _add_routes(app: FastAPI, state: ServeState, env: dict) -> None:
    config, metrics = state.config, state.metrics
    limits = config.limits

    def check_k(k: int) -> None:
        if not 1 <= k <= limits.max_k:
            raise ApiError(422, f"k must be in 1..{limits.max_k}, got {k}")

    def check_id(value: str, what: str) -> None:
        if not value.strip() or len(value) > limits.max_id_chars:
            raise ApiError(422, f"{what} must be 1..{limits.max_id_chars} characters")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not state.ready:
            reason = f"models failed to load: {state.load_error}" if state.load_error else "models are loading"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return {"ready": True, "variants": state.engine.variant_dirs}

    @app.get("/metrics")
    async def metrics_endpoint():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/search")
    async def search(body: SearchBody):
        t0 = time.perf_counter()
        state.require_ready()
        query = body.query.strip()
        if not query or len(body.query) > limits.max_query_chars:
            raise ApiError(422, f"query must be 1..{limits.max_query_chars} characters (not only spaces)")
        check_k(body.k)
        if body.user_id is not None:
            check_id(body.user_id, "user_id")
        capacity = config.batching.queue_size + config.batching.max_batch
        if state.in_flight >= capacity:
            raise state.overloaded(f"server busy ({state.in_flight} search requests in flight)")
        state.in_flight += 1
        try:
            return await _search(query, body.k, body.user_id, t0)
        finally:
            state.in_flight -= 1

    async def _search(query: str, k: int, user_id: str | None, t0: float) -> dict:
        deadline = t0 + config.batching.deadline_ms / 1000
        user = state.hasher.hash(user_id) if user_id is not None else None
        context = {"query_tokens": len(query.split()), **({"segment": user} if user else {})}
        variant = state.bandit.choose(context)
        metrics.pulls.labels(variant).inc()
        engine = state.engine
        recalled = await asyncio.to_thread(engine.recall, query)
        titles = [engine.catalog.titles[p] for p in recalled.ids]
        remaining = deadline - time.perf_counter()
        try:
            if remaining <= 0:
                raise DeadlineExceeded("deadline passed during recall")
            scores, queued_s, score_s = await state.batcher.timed_score(variant, query, titles, remaining)
        except Overloaded as exc:
            raise state.overloaded(str(exc)) from None
        except DeadlineExceeded as exc:
            metrics.shed.labels("deadline").inc()
            raise ApiError(504, f"deadline of {config.batching.deadline_ms:.0f} ms exceeded ({exc})") from None
        order = sorted(range(len(titles)), key=lambda i: -float(scores[i]))[:k]
        items = [{"id": recalled.ids[i], "title": titles[i], "score": float(scores[i]),
                  "sources": recalled.sources(recalled.ids[i])} for i in order]
        timings = {**recalled.timings_ms, "queue_ms": queued_s * 1e3, "rerank_ms": score_s * 1e3,
                   "total_ms": (time.perf_counter() - t0) * 1e3}
        timings = {name: round(v, 3) for name, v in timings.items()}
        for stage in STAGES:
            metrics.stage.labels(stage, variant).observe(timings[f"{stage}_ms"] / 1e3)
        request_id = new_request_id()
        ids = [it["id"] for it in items]
        await asyncio.to_thread(state.store.add_request, request_id, "search", variant, user, context, ids,
                                timings["total_ms"])
        state.request_log.write({"type": "search", "request_id": request_id, "variant": variant, "user": user,
                                 "context": context, "k": k, **query_log_fields(config, query),
                                 "items": ids, "candidates": len(titles), "timings_ms": timings})
        metrics.request.labels("search").observe(timings["total_ms"] / 1e3)
        return {"request_id": request_id, "variant": variant, "items": items, "timings_ms": timings}

    @app.post("/recommend")
    async def recommend(body: RecommendBody):
        t0 = time.perf_counter()
        state.require_ready()
        check_id(body.user_id, "user_id")
        check_k(body.k)
        if body.history is not None and len(body.history) > limits.max_history:
            raise ApiError(422, f"history holds at most {limits.max_history} items")
        engine = state.engine
        user = state.hasher.hash(body.user_id)
        if body.history is not None:
            history, source = body.history, "request"
        else:
            history = await asyncio.to_thread(state.store.profile, user, limits.max_history)
            source = "profile" if history else "none"
        unknown = [p for p in history if p not in engine.catalog.titles]
        known = [p for p in history if p in engine.catalog.titles]
        ids, fallback = await asyncio.to_thread(engine.recommender.recommend, known, body.k)
        variant = fallback or "seqrec"
        timings = {"recommend_ms": round((time.perf_counter() - t0) * 1e3, 3)}
        metrics.stage.labels("recommend", variant).observe(timings["recommend_ms"] / 1e3)
        request_id = new_request_id()
        await asyncio.to_thread(state.store.add_request, request_id, "recommend", variant, user,
                                {"history": len(known)}, ids, timings["recommend_ms"])
        state.request_log.write({"type": "recommend", "request_id": request_id, "variant": variant, "user": user,
                                 "fallback": fallback, "history": len(known), "unknown_history": len(unknown),
                                 "items": ids, "timings_ms": timings})
        metrics.request.labels("recommend").observe(timings["recommend_ms"] / 1e3)
        return {"request_id": request_id, "items": [{"id": p, "title": engine.catalog.titles.get(p, "")}
                                                    for p in ids],
                "fallback": fallback, "history_source": source, "unknown_history": unknown,
                "timings_ms": timings}

    @app.post("/feedback")
    async def feedback(body: FeedbackBody):
        state.require_ready()
        event = body.reward.replace("-", "_")
        if event not in config.feedback.rewards:
            raise ApiError(422, f"unknown reward {body.reward!r}; one of {', '.join(config.feedback.rewards)}")
        check_id(body.item_id, "item_id")
        if body.item_id not in state.engine.catalog.titles:
            raise ApiError(422, f"unknown item_id {body.item_id!r}")
        req = await asyncio.to_thread(state.store.get_request, body.request_id)
        if req is None:
            raise ApiError(404, f"unknown request_id {body.request_id!r}")
        reward = float(config.feedback.rewards[event])
        feedback_id = await asyncio.to_thread(state.store.add_feedback, body.request_id, body.item_id, event,
                                              reward, req["variant"], req["user_hash"])
        metrics.feedback.labels(event).inc()
        bandit_updated = False
        if req["kind"] == "search" and req["variant"] in state.engine.variants:
            try:
                await asyncio.to_thread(state.bandit.update, req["variant"], reward, req["context"],
                                        req["latency_ms"])
                metrics.rewards.labels(req["variant"]).inc(reward)
                bandit_updated = True
            except Exception as exc:  # noqa: BLE001 - the feedback is stored; the bandit catches up later
                log.error("bandit update failed: %s: %s", type(exc).__name__, exc)
        state.request_log.write({"type": "feedback", "request_id": body.request_id, "variant": req["variant"],
                                 "user": req["user_hash"], "context": req["context"], "item_id": body.item_id,
                                 "event": event, "reward": reward, "latency_ms": req["latency_ms"]})
        return {"ok": True, "feedback_id": feedback_id, "variant": req["variant"], "reward": reward,
                "bandit_updated": bandit_updated}

    @app.get("/admin/bandit")
    async def bandit_stats(request: Request):
        check_token(env, config.admin.token_env, request.headers.get("authorization"))
        state.require_ready()
        return {"policy": config.bandit.get("policy", "thompson"), "arms": state.bandit.stats()}

    @app.post("/admin/reload")
    async def reload(body: ReloadBody, request: Request):
        check_token(env, config.admin.token_env, request.headers.get("authorization"))
        state.require_ready()
        if not body.variants:
            raise ApiError(422, "variants must name at least one variant to reload")
        try:
            seconds = await asyncio.to_thread(state.engine.reload, body.variants)
        except LeanrankError as exc:
            log.warning("reload refused: %s", exc)
            raise ApiError(422, f"reload refused, old models still serving: {exc}",
                           serving=state.engine.variant_dirs) from None
        log.info("reloaded variants %s", ", ".join(body.variants))
        return {"swapped": dict(body.variants), "check_seconds": seconds, "serving": state.engine.variant_dirs}
