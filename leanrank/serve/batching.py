"""Micro-batching of concurrent rerank requests with a bounded queue and per-request deadlines.

Requests wait in an ``asyncio.Queue`` of ``queue_size``; one worker takes the first, waits up to
``max_wait_ms`` for up to ``max_batch - 1`` more, groups them by variant and scores each group's
pairs in one ``score(queries, titles)`` call on a single scoring thread (the event loop never
blocks). A full queue raises ``Overloaded`` at once (the app answers 503 + Retry-After); a request
whose deadline passes raises ``DeadlineExceeded`` (504) and is skipped if still queued, so a slow
model sheds load instead of piling up timeouts.

>>> import asyncio, numpy as np
>>> class Len:
...     def score(self, qs, ts): return np.array([len(t) for t in ts], dtype=np.float32)
>>> async def demo():
...     b = MicroBatcher(lambda name: Len(), max_batch=4, max_wait_ms=1, queue_size=8)
...     b.start()
...     out = await b.score("v", "q", ["a", "abc"], timeout_s=5)
...     await b.stop()
...     return out.tolist()
>>> asyncio.run(demo())
[1.0, 3.0]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from leanrank.core.errors import LeanrankError


class Overloaded(Exception):
    """The rerank queue is full: shed the request (503 + Retry-After)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its scores were ready (504)."""


@dataclass
class _Job:
    variant: str
    query: str
    titles: Sequence[str]
    deadline: float                      # time.monotonic() limit
    enqueued: float
    future: asyncio.Future
    started: float = field(default=0.0)  # when its batch began scoring


class MicroBatcher:
    """``await score(variant, query, titles, timeout_s)`` → scores, batched with concurrent requests.

    ``get_scorer(variant)`` is called at batch time, so a reload swapping the scorers takes effect
    for the next batch. ``on_batch(variant, size, seconds)`` observes each scored group.
    """

    def __init__(self, get_scorer: Callable[[str], object], max_batch: int = 8, max_wait_ms: float = 5.0,
                 queue_size: int = 64, on_batch: Callable[[str, int, float], None] | None = None):
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise LeanrankError("need max_batch >= 1, queue_size >= 1 and max_wait_ms >= 0")
        self.get_scorer, self.max_batch, self.max_wait = get_scorer, max_batch, max_wait_ms / 1000
        self.queue_size, self.on_batch = queue_size, on_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.shed = 0

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a batch)."""
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leanrank-rerank")
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(Overloaded("server shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def score(self, variant: str, query: str, titles: Sequence[str], timeout_s: float) -> np.ndarray:
        """Scores of (query, title) pairs; ``Overloaded`` when the queue is full, ``DeadlineExceeded``
        after ``timeout_s``."""
        return (await self.timed_score(variant, query, titles, timeout_s))[0]

    async def timed_score(self, variant: str, query: str, titles: Sequence[str],
                          timeout_s: float) -> tuple[np.ndarray, float, float]:
        """``score`` plus (seconds queued, seconds scoring) of this request."""
        if self._queue is None:
            raise Overloaded("batcher not started")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        job = _Job(variant, query, list(titles), now + timeout_s, now, loop.create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.shed += 1
            raise Overloaded(f"rerank queue full ({self.queue_size} waiting)") from None
        try:
            scores, started, finished = await asyncio.wait_for(asyncio.shield(job.future),
                                                               timeout=max(timeout_s, 0.0))
        except TimeoutError:
            job.future.cancel()  # a queued job is then skipped by the worker
            raise DeadlineExceeded(f"deadline of {timeout_s * 1000:.0f} ms passed") from None
        return scores, started - now, finished - started

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            end = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = end - time.monotonic()
                try:
                    batch.append(self._queue.get_nowait() if remaining <= 0
                                 else await asyncio.wait_for(self._queue.get(), remaining))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            now = time.monotonic()
            live = []
            for job in batch:
                if job.future.done():
                    continue
                if job.deadline <= now:
                    job.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                    continue
                live.append(job)
            groups: dict[str, list[_Job]] = {}
            for job in live:
                groups.setdefault(job.variant, []).append(job)
            for variant, jobs in groups.items():
                try:
                    started = time.monotonic()
                    scores = await loop.run_in_executor(self._executor, self._score_group, variant, jobs)
                    finished = time.monotonic()
                except Exception as exc:  # noqa: BLE001 - a scorer failure answers its requests, not the worker
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                if self.on_batch is not None:
                    self.on_batch(variant, len(jobs), finished - started)
                for job, s in zip(jobs, scores):
                    if not job.future.done():
                        job.future.set_result((s, started, finished))

    def _score_group(self, variant: str, jobs: list[_Job]) -> list[np.ndarray]:
        scorer = self.get_scorer(variant)
        queries = [job.query for job in jobs for _ in job.titles]
        titles = [t for job in jobs for t in job.titles]
        flat = np.asarray(scorer.score(queries, titles), dtype=np.float32).reshape(-1) if titles else \
            np.zeros(0, np.float32)
        if len(flat) != len(titles):
            raise RuntimeError(f"variant {variant!r} returned {len(flat)} scores for {len(titles)} pairs")
        out, at = [], 0
        for job in jobs:
            out.append(flat[at: at + len(job.titles)])
            at += len(job.titles)
        return out
