"""``leanrank loadtest URL``: a bounded, loopback-only load test of a ``leanrank serve`` server.

Locust drives the load (as a library: ``locust.env.Environment`` + a local runner, headless,
``FastHttpUser``): ``concurrency`` users each POST ``/search`` with queries from a file or a
dataset's test split, until ``requests`` searches are done or ``seconds`` pass, whichever comes
first. With ``feedback > 0`` a seeded share of the answered (200) searches is followed by a
``POST /feedback`` (a click on the top item); the acknowledged ones are listed so a caller can
check they are in the server's database. ``rate`` (searches/s over all users) paces the users
(open loop, ``constant_throughput``); without it every user sends its next search at once (closed
loop: latency ≈ concurrency / throughput once the server is saturated).

The result (``LoadtestResult.to_dict``): qps, client-side p50/p95/p99 ms (all answers and 200s
only), counts by status code (``"0"`` = no HTTP answer: refused, reset, timed out), shed rate
(share of 503), server-side stage timings (p50/p99 of the ``timings_ms`` of the 200 answers),
variants served, and the feedback sent / acknowledged.

Importing locust monkey-patches the process (gevent), so ``run_loadtest`` belongs in a process of
its own: the CLI command, or ``python -m leanrank.cli loadtest`` from a benchmark.

>>> check_loopback("http://127.0.0.1:8000")
'http://127.0.0.1:8000'
>>> check_loopback("http://example.com")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
leanrank.core.errors.LeanrankError: ...
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from leanrank.core.errors import LeanrankError

STAGE_KEYS = ("bm25_ms", "dense_ms", "fuse_ms", "queue_ms", "rerank_ms", "total_ms")


def check_loopback(url: str) -> str:
    """The URL without a trailing slash, or a ``LeanrankError`` unless it is http(s) on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LeanrankError(f"loadtest URL must look like http://127.0.0.1:PORT, got {url!r}")
    host = parts.hostname
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LeanrankError(f"loadtest only targets loopback (127.0.0.0/8, ::1, localhost), not {host!r}")
    if parts.path not in ("", "/") or parts.query:
        raise LeanrankError(f"loadtest URL is the server root (no path or query), got {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class LoadtestConfig:
    url: str
    requests: int = 200                 # searches, at most
    seconds: float = 60.0               # wall-clock bound
    concurrency: int = 4                # locust users
    k: int = 10
    feedback: float = 0.0               # share of 200 answers followed by POST /feedback
    rate: float | None = None           # searches/s over all users (open loop); None = closed loop
    timeout_s: float = 30.0             # per HTTP request
    users: int = 50                     # distinct user_id values sent (0 = none)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", check_loopback(self.url))
        if self.requests < 1 or self.concurrency < 1 or self.k < 1:
            raise LeanrankError(f"need requests, concurrency and k >= 1, got {self.requests}, "
                                f"{self.concurrency}, {self.k}")
        if not 0 < self.seconds <= 3600:
            raise LeanrankError(f"seconds must be in (0, 3600], got {self.seconds}")
        if not 0.0 <= self.feedback <= 1.0:
            raise LeanrankError(f"feedback must be a share in [0, 1], got {self.feedback}")
        if self.rate is not None and self.rate <= 0:
            raise LeanrankError(f"rate must be > 0 searches/s, got {self.rate}")
        if self.timeout_s <= 0 or self.users < 0:
            raise LeanrankError(f"need timeout_s > 0 and users >= 0, got {self.timeout_s}, {self.users}")


def read_queries(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, one query each."""
    path = Path(path)
    if not path.is_file():
        raise LeanrankError(f"{path}: queries file not found")
    queries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not queries:
        raise LeanrankError(f"{path}: no queries (one per line)")
    return queries


def dataset_queries(name: str, data_dir: str | Path | None = None, split: str = "test") -> list[str]:
    """Queries of a search dataset's split (held out from training: ``test`` by default)."""
    from leanrank.data.registry import load_search_dataset

    part = load_search_dataset(name, data_dir).split().get(split)
    if part is None:
        raise LeanrankError(f"dataset {name!r} has no split {split!r}")
    queries = part.queries()
    if not queries:
        raise LeanrankError(f"dataset {name!r}: the {split} split has no queries")
    return queries


@dataclass
class _Tally:
    """What the users record; filled on the gevent loop (one thread), so no locks."""

    planned: int
    issued: int = 0
    completed: int = 0                                # searches done, with their feedback
    searches: list = field(default_factory=list)      # (status, ms, timings_ms | None, variant | None)
    feedback: list = field(default_factory=list)      # (request_id, item_id, status, feedback_id | None)
    first: float | None = None
    last: float | None = None

    def ticket(self) -> int | None:
        if self.issued >= self.planned:
            return None
        self.issued += 1
        return self.issued - 1


def _percentiles(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    a = np.asarray(values, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "mean_ms": round(float(a.mean()), 2),
            "max_ms": round(float(a.max()), 2)}


def summarize(config: LoadtestConfig, tally: _Tally, wall_s: float, tool: str) -> dict:
    """The result document of one run (see the module docstring)."""
    statuses = Counter(str(s) for s, *_ in tally.searches)
    n = len(tally.searches)
    elapsed = (tally.last - tally.first) if n and tally.first is not None else 0.0
    elapsed = max(elapsed, 1e-9)
    ok = [row for row in tally.searches if row[0] == 200]
    stages = {}
    for key in STAGE_KEYS:
        values = [row[2][key] for row in ok if row[2] and key in row[2]]
        if values:
            p = _percentiles(values)
            stages[key.removesuffix("_ms")] = {"p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"]}
    fb_status = Counter(str(s) for _, _, s, _ in tally.feedback)
    return {
        "url": config.url, "tool": tool, "concurrency": config.concurrency, "rate": config.rate,
        "requests_limit": config.requests, "seconds_limit": config.seconds, "k": config.k,
        "requests": n, "wall_s": round(wall_s, 2), "elapsed_s": round(elapsed, 3),
        "qps": round(n / elapsed, 2) if n else 0.0, "ok_qps": round(len(ok) / elapsed, 2) if n else 0.0,
        **_percentiles([ms for _, ms, *_ in tally.searches]),
        "ok": {k: v for k, v in _percentiles([row[1] for row in ok]).items()},
        "status_counts": dict(sorted(statuses.items())),
        "errors_5xx": sum(c for s, c in statuses.items() if s.startswith("5")),
        "shed_rate": round(statuses.get("503", 0) / n, 4) if n else 0.0,
        "server_timings_ms": stages,
        "variants": dict(Counter(row[3] for row in ok if row[3])),
        "feedback": {
            "share": config.feedback, "sent": len(tally.feedback), "status_counts": dict(sorted(fb_status.items())),
            "acknowledged": [{"request_id": r, "item_id": i, "feedback_id": f}
                             for r, i, s, f in tally.feedback if s == 200],
        },
    }


def run_loadtest(config: LoadtestConfig, queries: list[str], log=print) -> dict:
    """Run the load with locust (headless, in this process) and return the result document."""
    if not queries:
        raise LeanrankError("loadtest needs at least one query")
    import gevent.event
    import locust
    from locust import FastHttpUser, constant, constant_throughput, task
    from locust.env import Environment

    tally = _Tally(planned=config.requests)
    done = gevent.event.Event()
    rng = random.Random(config.seed)
    order = [rng.randrange(len(queries)) for _ in range(config.requests)]
    wants_feedback = [rng.random() < config.feedback for _ in range(config.requests)]
    wait = constant(0) if config.rate is None else constant_throughput(config.rate / config.concurrency)

    class SearchUser(FastHttpUser):
        host = config.url
        wait_time = wait
        network_timeout = config.timeout_s
        connection_timeout = config.timeout_s

        @task
        def search(self) -> None:
            n = tally.ticket()
            if n is None:  # all searches issued: idle until the runner stops
                done.wait()
                return
            body = {"query": queries[order[n]], "k": config.k}
            if config.users:
                body["user_id"] = f"loadtest-user-{n % config.users}"
            t0 = time.perf_counter()
            tally.first = t0 if tally.first is None else tally.first
            response = self.client.post("/search", json=body, name="search")
            ms = (time.perf_counter() - t0) * 1e3
            status = int(response.status_code or 0)
            data = _json(response) if status == 200 else None
            tally.searches.append((status, ms, (data or {}).get("timings_ms"), (data or {}).get("variant")))
            tally.last = time.perf_counter()
            if data and wants_feedback[n] and data.get("items"):
                self._feedback(data["request_id"], data["items"][0]["id"])
            tally.completed += 1
            if tally.completed >= config.requests:
                done.set()

        def _feedback(self, request_id: str, item_id: str) -> None:
            r = self.client.post("/feedback", json={"request_id": request_id, "item_id": item_id,
                                                    "reward": "click"}, name="feedback")
            status = int(r.status_code or 0)
            fid = (_json(r) or {}).get("feedback_id") if status == 200 else None
            tally.feedback.append((request_id, item_id, status, fid))

    env = Environment(user_classes=[SearchUser])
    runner = env.create_local_runner()
    log(f"loadtest {config.url}: {config.requests} searches or {config.seconds:g} s, concurrency "
        f"{config.concurrency}{'' if config.rate is None else f', {config.rate:g}/s'} (locust {locust.__version__})")
    t0 = time.perf_counter()
    runner.start(config.concurrency, spawn_rate=100)  # locust warns above 100 users/s
    done.wait(timeout=config.seconds)
    runner.quit()
    runner.greenlet.join(timeout=config.timeout_s + 5)
    return summarize(config, tally, time.perf_counter() - t0, f"locust {locust.__version__} (FastHttpUser)")


def _json(response) -> dict | None:
    try:
        data = response.json()
    except Exception:  # noqa: BLE001 - a non-JSON body is recorded by its status alone
        return None
    return data if isinstance(data, dict) else None


def summary_line(result: dict) -> str:
    """One line for a person: qps, latency and the status mix."""
    statuses = ", ".join(f"{s}: {c}" for s, c in result["status_counts"].items())
    fb = result["feedback"]
    return (f"{result['requests']} searches in {result['elapsed_s']:.1f} s: {result['qps']:.1f} qps, "
            f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms; status {statuses}; "
            f"shed {result['shed_rate']:.1%}; feedback {len(fb['acknowledged'])}/{fb['sent']} acknowledged")


def loadtest_command(url: str, queries: str | Path | None = None, dataset: str | None = None,
                     data_dir: str | Path | None = None, out: str | Path | None = None, log=print,
                     **options) -> dict:
    """What ``leanrank loadtest`` does: check everything, run, print one line, write ``out``."""
    config = LoadtestConfig(url=url, **options)
    if (queries is None) == (dataset is None):
        raise LeanrankError("give exactly one of --queries FILE or --dataset NAME (its test-split queries)")
    texts = read_queries(queries) if queries is not None else dataset_queries(dataset, data_dir)
    result = {**run_loadtest(config, texts, log=log),
              "queries": str(queries) if queries is not None else f"{dataset}:test", "n_queries": len(texts)}
    log(summary_line(result))
    if out is not None:
        from leanrank.core.io import write_json

        write_json(out, result)
        log(f"wrote {out}")
    return result
