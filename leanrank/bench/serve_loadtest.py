"""``make bench-serve``: ``leanrank serve`` on the Home Depot catalog under load, measured by
``leanrank loadtest`` (locust), one server per variant so each phase measures one variant alone.

Phases (each a ``leanrank loadtest`` process against a ``leanrank serve`` process on 127.0.0.1):

* **A** the compressed variant (default ``runs/distill-bench/student-ort-int8``) at concurrency 4;
* **C** overload of that same server: concurrency 64 against a small rerank queue — only 200 and
  503 expected; feedback posted for a share of the answers;
* **B** the fp32 teacher (``runs/teacher-homedepot-2/model``) in its own server, as A.

Recall is BM25 + MiniLM FAISS, ``--recall-k`` candidates each, fused; the top ``--rerank-n`` are
reranked. Queries are the held-out test split of the catalog's dataset. After each server stops,
its feedback SQLite file is opened and every feedback the server acknowledged with 200 is looked
up. Writes ``OUT.json`` / ``OUT.md`` (``leanrank.bench.report.write_results``).

    python -m leanrank.bench.serve_loadtest --data-dir ../shared/data --out benchmarks/results/serve-loadtest
    python -m leanrank.bench.serve_loadtest --catalog synthetic --requests 20 --overload-requests 40 \\
        --out runs/serve-loadtest-smoke/result          # minutes: a check that everything runs
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from leanrank.core.errors import LeanrankError
from leanrank.serve.config import DENSE_INDEXES, DENSE_RUNTIMES

COLUMNS = ("phase", "variant", "concurrency", "requests", "qps", "p50_ms", "p95_ms", "p99_ms", "status",
           "errors_5xx", "shed_rate", "server_rerank_p50_ms", "server_queue_p50_ms", "server_recall_p50_ms",
           "feedback_acked", "feedback_in_db")
BARS = {"p50_ms": 60.0, "p99_ms": 150.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_config(variant: str, model_dir: str, work: Path, catalog: str, data_dir: str | None, recall_k: int,
                  rerank_n: int, queue_size: int, dense: bool = True, dense_runtime: str = "onnx",
                  cache: Path | None = None, dense_index: str = "fp16", max_batch: int = 4, dense_nprobe: int = 32,
                  max_wait_ms: float = 2.0, threads: int | None = None) -> dict:
    """A ``leanrank serve`` config with one variant (the bandit has one arm: always that variant).
    ``cache`` (shared by the servers of a run) keeps the catalog vectors and the query encoder."""
    cache = cache or work / "cache"
    return {
        "catalog": {"source": catalog, **({"data_dir": str(data_dir)} if catalog == "homedepot" else {})},
        "recall": {"bm25_k": recall_k, "dense_k": recall_k if dense else 0, "rerank_n": rerank_n,
                   "dense_runtime": dense_runtime, "dense_index": dense_index, "dense_nprobe": dense_nprobe,
                   "embedding_cache": str(cache / "embeddings"),
                   "encoder_cache": str(cache / "encoders")},
        "variants": {variant: str(model_dir)},
        "bandit": {"policy": "thompson", "seed": 0},
        "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "queue_size": queue_size,
                     "deadline_ms": 10000},
        "limits": {"max_k": min(50, rerank_n)},
        "paths": {"feedback_db": str(work / "feedback.sqlite"), "bandit_state": str(work / "bandit.sqlite"),
                  "request_log": str(work / "requests.jsonl")},
        "server": {"host": "127.0.0.1", "port": 0, **({"torch_threads": threads} if threads else {})},
    }


class Server:
    """``leanrank serve CONFIG`` in a subprocess on a free loopback port; ``with`` waits for /readyz."""

    def __init__(self, config: dict, work: Path, ready_timeout: float = 1800.0, log=print):
        self.config, self.work, self.ready_timeout, self.log = config, work, ready_timeout, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    def __enter__(self) -> Server:
        import yaml

        if self.work.exists():
            shutil.rmtree(self.work)   # a fresh feedback DB per run: the check below counts only this run
        self.work.mkdir(parents=True)
        config_path = self.work / "serve.yaml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.setdefault("LEANRANK_SERVE_SECRET", secrets.token_hex(16))
        self.log_path = self.work / "server.log"
        with open(self.log_path, "w", encoding="utf-8") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "leanrank.cli", "serve", str(config_path),
                                          "--port", str(self.port)], stdout=fh, stderr=subprocess.STDOUT, env=env)
        t0 = time.monotonic()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - t0
        self.log(f"server {self.url} ready in {self.ready_s:.0f} s ({', '.join(self.config['variants'])})")
        return self

    def _wait_ready(self) -> None:
        end = time.monotonic() + self.ready_timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise LeanrankError(f"server exited with code {self.proc.returncode} before /readyz; "
                                    f"last log lines:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code != 503:
                    raise LeanrankError(f"/readyz answered {exc.code}") from None
                reason = json.loads(exc.read() or b"{}").get("reason", "")
                if "failed" in reason:
                    raise LeanrankError(f"server could not load its models: {reason}") from None
            except OSError:
                pass
            time.sleep(0.5)
        raise LeanrankError(f"server not ready after {self.ready_timeout:.0f} s; last log lines:\n{self.log_tail()}")

    def log_tail(self, n: int = 8) -> str:
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> int | None:
        """SIGINT (uvicorn's graceful shutdown closes the stores), then SIGKILL after 60 s."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()


def warm_up(url: str, queries: list[str], n: int = 8) -> None:
    """A few sequential searches before a measured phase (first-call costs stay out of the numbers)."""
    for q in queries[:n]:
        req = urllib.request.Request(f"{url}/search", data=json.dumps({"query": q, "k": 10}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=60).read()
        except urllib.error.HTTPError:
            pass


def run_phase(url: str, queries_file: Path, out: Path, requests: int, seconds: float, concurrency: int,
              feedback: float, rate: float | None = None, seed: int = 0) -> dict:
    """One ``leanrank loadtest`` process (locust monkey-patches its process, so not this one)."""
    cmd = [sys.executable, "-m", "leanrank.cli", "loadtest", url, "--queries", str(queries_file),
           "--requests", str(requests), "--seconds", str(seconds), "--concurrency", str(concurrency),
           "--feedback", str(feedback), "--seed", str(seed), "--out", str(out)]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    except subprocess.TimeoutExpired:
        raise LeanrankError(f"loadtest did not finish within {seconds + 300:.0f} s") from None
    if proc.returncode != 0 or not out.is_file():
        raise LeanrankError(f"loadtest failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def check_feedback(db_path: str | Path, acknowledged: list[dict]) -> dict:
    """Every acknowledged feedback (request_id, item_id, feedback_id) present in the feedback table."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, request_id, item_id FROM feedback")}
    finally:
        db.close()
    missing = [a for a in acknowledged if rows.get(a["feedback_id"]) != (a["request_id"], a["item_id"])]
    return {"acknowledged": len(acknowledged), "found": len(acknowledged) - len(missing), "rows_in_db": len(rows),
            "missing": missing[:20], "all_present": not missing}


def phase_row(phase: str, variant: str, result: dict) -> dict:
    """One results row: the loadtest numbers that matter, plus the raw stage timings."""
    st = result["server_timings_ms"]
    recall = None
    if "bm25" in st and "dense" in st:
        recall = round(st["bm25"]["p50_ms"] + st["dense"]["p50_ms"] + st.get("fuse", {}).get("p50_ms", 0.0), 2)
    return {"phase": phase, "variant": variant, "role": "teacher" if phase == "B" else "variant",
            "concurrency": result["concurrency"], "requests": result["requests"],
            "qps": result["qps"], "p50_ms": result["p50_ms"], "p95_ms": result["p95_ms"], "p99_ms": result["p99_ms"],
            "status": ", ".join(f"{s}: {c}" for s, c in result["status_counts"].items()),
            "status_counts": result["status_counts"], "errors_5xx": result["errors_5xx"],
            "shed_rate": result["shed_rate"], "server_rerank_p50_ms": st.get("rerank", {}).get("p50_ms"),
            "server_queue_p50_ms": st.get("queue", {}).get("p50_ms"), "server_recall_p50_ms": recall,
            "server_timings_ms": st, "feedback_acked": len(result["feedback"]["acknowledged"]),
            "feedback_status_counts": result["feedback"]["status_counts"], "elapsed_s": result["elapsed_s"]}


def bars(rows: list[dict]) -> dict:
    """The issue's bars from the phase rows: A = compressed at concurrency 4, B = teacher, C = overload."""
    a, b, c = (next((r for r in rows if r["phase"] == p), None) for p in "ABC")
    c_statuses = set(c["status_counts"]) if c else set()
    return {
        f"A_p50_ms<={BARS['p50_ms']:.0f}": bool(a and a["p50_ms"] is not None and a["p50_ms"] <= BARS["p50_ms"]),
        f"A_p99_ms<={BARS['p99_ms']:.0f}": bool(a and a["p99_ms"] is not None and a["p99_ms"] <= BARS["p99_ms"]),
        "A_zero_5xx": bool(a and a["errors_5xx"] == 0 and "0" not in a["status_counts"]),
        "C_overload_only_200_and_503": bool(c and c_statuses <= {"200", "503"} and "503" in c_statuses),
        "feedback_acknowledged_all_in_db": bool(rows and all(r.get("feedback_in_db") == r["feedback_acked"]
                                                             for r in rows) and sum(r["feedback_acked"] for r in rows)),
        "teacher_measured_same_run": bool(b and b["requests"] > 0),
    }


def run_bench(args: argparse.Namespace, log=print) -> dict:
    t_start = time.time()
    extras = []
    for spec in args.extra:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise LeanrankError(f"--extra wants NAME=MODEL_DIR, got {spec!r}")
        extras.append((name, path))
    for name, path in (("compressed", args.compressed), ("teacher", args.teacher), *extras):
        if not str(path).startswith("builtin:") and not Path(path).is_dir():
            raise LeanrankError(f"--{name} {path}: model folder not found")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    from leanrank.data.registry import load_search_dataset

    dataset = load_search_dataset(args.catalog, args.data_dir)
    queries, n_products = dataset.split()["test"].queries(), len(dataset.titles)
    queries_file = work / "queries.txt"
    queries_file.write_text("\n".join(queries) + "\n", encoding="utf-8")
    log(f"{args.catalog}: {n_products} products, {len(queries)} held-out test queries")
    common = dict(catalog=args.catalog, data_dir=args.data_dir, recall_k=args.recall_k, rerank_n=args.rerank_n,
                  queue_size=args.queue_size, dense=not args.no_dense, dense_runtime=args.dense_runtime,
                  cache=work / "cache", dense_index=args.dense_index, max_batch=args.max_batch,
                  dense_nprobe=args.dense_nprobe,
                  max_wait_ms=args.max_wait_ms, threads=args.threads)
    rows, results, checks, servers = [], {}, {}, {}
    plan = [("compressed", args.compressed_name, args.compressed,
             [("A", args.concurrency, args.requests, args.seconds, args.feedback, args.rate),
              *([("A-paced", args.concurrency, args.requests, args.seconds, args.feedback, args.paced_rate)]
                if args.paced_rate else []),
              ("C", args.overload_concurrency, args.overload_requests, args.overload_seconds, args.overload_feedback,
               None)]),
            *[(f"extra-{i}", name, path, [(f"A{i + 2}", args.concurrency, args.requests, args.seconds, args.feedback,
                                           args.rate)]) for i, (name, path) in enumerate(extras)],
            ("teacher", args.teacher_name, args.teacher,
             [("B", args.concurrency, args.requests, args.seconds, args.feedback, args.rate)])]
    for key, variant, model_dir, phases in plan:
        server_work = work / key
        server = Server(server_config(variant, model_dir, server_work, **common), server_work, log=log)
        with server:
            servers[key] = {"variant": variant, "model_dir": str(model_dir), "ready_s": round(server.ready_s, 1)}
            for phase, concurrency, requests, seconds, feedback, rate in phases:
                warm_up(server.url, queries)
                log(f"phase {phase}: {variant}, concurrency {concurrency}, {requests} searches or {seconds:g} s")
                result = run_phase(server.url, queries_file, server_work / f"phase-{phase}.json", requests, seconds,
                                   concurrency, feedback, rate=rate)
                results[phase] = result
                rows.append(phase_row(phase, variant, result))
                log(f"  {rows[-1]['qps']} qps, p50 {rows[-1]['p50_ms']} ms, p99 {rows[-1]['p99_ms']} ms, "
                    f"status {rows[-1]['status']}")
        servers[key]["exit_code"] = server.proc.returncode
        for phase, *_ in phases:   # after the server stopped: the acknowledged feedback must be on disk
            checks[phase] = check_feedback(server_work / "feedback.sqlite", results[phase]["feedback"]["acknowledged"])
            row = next(r for r in rows if r["phase"] == phase)
            row["feedback_in_db"] = checks[phase]["found"]
            log(f"phase {phase} feedback: {checks[phase]['found']}/{checks[phase]['acknowledged']} acknowledged "
                f"rows in the DB")
    rows.sort(key=lambda r: r["phase"])   # A, A-paced, A2.., B, C
    doc = _document(args, rows, results, checks, servers, n_products, len(queries), time.time() - t_start)
    from leanrank.bench.report import write_results

    json_path, md_path = write_results(args.out, doc)
    log(f"wrote {json_path} and {md_path}")
    return doc


def _document(args, rows, results, checks, servers, n_products, n_queries, seconds) -> dict:
    from leanrank.core.machine import machine_info, versions

    a, b = (next((r for r in rows if r["phase"] == p), None) for p in "AB")
    bar = bars(rows)
    notes = [
        "Client (locust, FastHttpUser) and server share this machine's CPUs; latencies are client-side, "
        "from request sent to response read, over all answers of the phase.",
        "Concurrency N = N locust users, each sending its next search as soon as the last one is answered "
        "(closed loop)" + (f", paced to {args.rate:g} searches/s in phases A and B" if args.rate else "")
        + ": once the server is saturated, latency ≈ N / throughput.",
        "One server per variant (one bandit arm each), so phases A and B never mix variants; phase C "
        "reuses phase A's server.",
    ]
    if args.paced_rate:
        notes.append(f"Phase A-paced: the same users paced to {args.paced_rate:g} searches/s in all (open loop, "
                     "locust constant_throughput): latency without a standing queue.")
    if a and b and a["qps"] and b["qps"]:
        notes.append(f"Throughput at concurrency {args.concurrency}: {a['qps']:.1f} qps ({args.compressed_name}) vs "
                     f"{b['qps']:.1f} qps ({args.teacher_name}), {a['qps'] / b['qps']:.1f}×; p50 {a['p50_ms']} vs "
                     f"{b['p50_ms']} ms.")
    return {
        "benchmark": "serve-loadtest", "dataset": f"{args.catalog} catalog ({n_products:,} products)",
        "split": "test-query", "command": shlex.join([Path(sys.executable).name, "-m", "leanrank.bench.serve_loadtest",
                                                       *sys.argv[1:]]),
        "columns": list(COLUMNS), "rows": rows, "bar": bar, "notes": notes,
        "protocol": {
            "catalog": f"{args.catalog}, {n_products} products; queries: {n_queries} held-out test-split queries, "
                       "drawn at random (seeded)",
            "recall": f"BM25 top {args.recall_k}" + ("" if args.no_dense else f" + MiniLM-L6 FAISS top {args.recall_k}")
                      + f", fused by reciprocal rank; top {args.rerank_n} reranked; k = 10 returned",
            "batching": f"max_batch {args.max_batch}, max_wait {args.max_wait_ms:g} ms, queue_size "
                        f"{args.queue_size} (capacity {args.queue_size + args.max_batch} in flight), deadline 10 s",
            "dense": f"query encoder {args.dense_runtime}, FAISS {args.dense_index} index"
                     f"{f' (nprobe {args.dense_nprobe})' if args.dense_index == 'ivf' else ''}, one OpenMP thread",
            "phases": f"A/B: concurrency {args.concurrency}, {args.requests} searches or {args.seconds:g} s, "
                      f"feedback on {args.feedback:.0%}; C: concurrency {args.overload_concurrency}, "
                      f"{args.overload_requests} searches or {args.overload_seconds:g} s, feedback on "
                      f"{args.overload_feedback:.0%}",
        },
        "servers": servers,
        "feedback_check": checks,
        "phases": results,
        "machine": machine_info(),
        "versions": {**versions(), **versions(("locust", "fastapi", "uvicorn"))},
        "seconds": round(seconds, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", default="homedepot", choices=("homedepot", "synthetic"))
    p.add_argument("--data-dir", default=os.environ.get("LEANRANK_DATA"))
    p.add_argument("--compressed", default="runs/distill-bench/student-ort-int8")
    p.add_argument("--compressed-name", default="student-ort-int8")
    p.add_argument("--teacher", default="runs/teacher-homedepot-2/model")
    p.add_argument("--teacher-name", default="teacher-fp32")
    p.add_argument("--recall-k", type=int, default=1000, help="BM25 and dense candidates each")
    p.add_argument("--rerank-n", type=int, default=50)
    p.add_argument("--no-dense", action="store_true", help="BM25 recall only (quick checks)")
    p.add_argument("--dense-runtime", default="onnx", choices=DENSE_RUNTIMES, help="query encoder runtime")
    p.add_argument("--dense-index", default="fp16", choices=DENSE_INDEXES, help="FAISS index of the catalog")
    p.add_argument("--dense-nprobe", type=int, default=32, help="ivf: cells scanned per query")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=DIR",
                   help="another compressed variant measured like phase A (phases A2, A3...)")
    p.add_argument("--queue-size", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=4, help="rerank requests scored together")
    p.add_argument("--threads", type=int, default=None,
                   help="server torch/ORT threads per model (default: all cores)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a rerank waits for company")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--rate", type=float, default=None, help="pace phases A and B to this many searches/s")
    p.add_argument("--paced-rate", type=float, default=None,
                   help="also measure the compressed variant paced to this many searches/s (phase A-paced)")
    p.add_argument("--feedback", type=float, default=0.1)
    p.add_argument("--overload-concurrency", type=int, default=64)
    p.add_argument("--overload-requests", type=int, default=1000)
    p.add_argument("--overload-seconds", type=float, default=60)
    p.add_argument("--overload-feedback", type=float, default=0.3)
    p.add_argument("--work-dir", default="runs/serve-loadtest")
    p.add_argument("--out", default="benchmarks/results/serve-loadtest")
    return p.parse_args(argv)


def exit_on_sigterm() -> None:
    """SIGTERM → ``SystemExit`` in the main thread, so ``with Server(...)`` stops its ``leanrank
    serve`` child instead of leaving it running when this process is killed."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> None:
    exit_on_sigterm()
    try:
        run_bench(parse_args(argv))
    except LeanrankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
