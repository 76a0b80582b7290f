"""MicroBatcher: concurrent requests share a score call; a full queue sheds; deadlines are kept."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from leanrank.serve.batching import DeadlineExceeded, MicroBatcher, Overloaded


class Recorder:
    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.calls: list[int] = []
        self.delay, self.fail_on = delay, fail_on

    def score(self, queries, titles):
        time.sleep(self.delay)
        if self.fail_on in queries:
            raise ValueError("boom")
        self.calls.append(len(titles))
        return np.array([len(q) + len(t) for q, t in zip(queries, titles)], dtype=np.float32)


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_scored_in_one_batch_and_split_back():
    rec = Recorder()

    async def main():
        b = MicroBatcher(lambda v: rec, max_batch=4, max_wait_ms=50, queue_size=8)
        b.start()
        out = await asyncio.gather(*[b.score("v", "q" * i, ["ab", "abc"], timeout_s=5) for i in range(1, 5)])
        await b.stop()
        return out

    out = run(main())
    assert rec.calls == [8]
    assert [o.tolist() for o in out] == [[i + 2, i + 3] for i in range(1, 5)]


def test_variants_are_scored_separately_with_their_own_scorer():
    scorers = {"x": Recorder(), "y": Recorder()}

    async def main():
        b = MicroBatcher(lambda v: scorers[v], max_batch=8, max_wait_ms=30, queue_size=8)
        b.start()
        await asyncio.gather(b.score("x", "q", ["a"], 5), b.score("y", "q", ["a", "b"], 5), b.score("x", "q", ["c"], 5))
        await b.stop()

    run(main())
    assert scorers["x"].calls == [2] and scorers["y"].calls == [2]


def test_full_queue_raises_overloaded_and_deadline_raises_deadline_exceeded():
    slow = Recorder(delay=0.3)

    async def main():
        b = MicroBatcher(lambda v: slow, max_batch=1, max_wait_ms=0, queue_size=1)
        b.start()
        first = asyncio.ensure_future(b.score("v", "q", ["a"], 5))
        await asyncio.sleep(0.05)                           # first is being scored
        second = asyncio.ensure_future(b.score("v", "q", ["a"], 0.1))   # queued, will miss its deadline
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await b.score("v", "q", ["a"], 5)
        with pytest.raises(DeadlineExceeded):
            await second
        assert (await first).tolist() == [2.0]
        await asyncio.sleep(0.35)
        await b.stop()
        return b.shed

    assert run(main()) == 1
    assert slow.calls == [1]   # the expired request was never scored


def test_a_failing_scorer_fails_its_requests_not_the_worker():
    rec = Recorder(fail_on="bad")

    async def main():
        b = MicroBatcher(lambda v: rec, max_batch=1, max_wait_ms=0, queue_size=4)
        b.start()
        with pytest.raises(ValueError):
            await b.score("v", "bad", ["a"], 5)
        ok = await b.score("v", "good", ["a"], 5)
        await b.stop()
        return ok

    assert run(main()).tolist() == [5.0]
