"""``leanrank loadtest`` (locust) against real ``leanrank serve`` processes on a tiny synthetic catalog.

The servers rerank with ``builtin:bm25`` (no model, no training); each loadtest runs as its own
process, as the benchmark runs it (locust monkey-patches the process it is imported in).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("locust")

from leanrank.bench.loadtest import LoadtestConfig, check_loopback  # noqa: E402
from leanrank.bench.serve_loadtest import Server, check_feedback, run_phase, server_config  # noqa: E402
from leanrank.core.errors import LeanrankError  # noqa: E402

QUERIES = ["cordless drill", "paint roller", "garden hose", "led bulb", "wood screws", "ladder", "saw blade"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1/", "https://127.0.0.2:443",
                                 "http://[::1]:8000"])
def test_loopback_urls_are_accepted(url):
    assert check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://example.com:8000", "http://10.0.0.1:8000", "http://0.0.0.0:8000",
                                 "ftp://127.0.0.1", "127.0.0.1:8000", "http://127.0.0.1:8000/search",
                                 "http://localhost.example.com"])
def test_non_loopback_or_odd_urls_are_refused(url):
    with pytest.raises(LeanrankError):
        check_loopback(url)


@pytest.mark.parametrize("bad", [{"requests": 0}, {"concurrency": 0}, {"seconds": 0}, {"feedback": 1.5},
                                 {"rate": 0.0}, {"timeout_s": 0}])
def test_config_rejects_bad_bounds(bad):
    with pytest.raises(LeanrankError):
        LoadtestConfig(url="http://127.0.0.1:8000", **bad)


@pytest.mark.parametrize("args, words", [
    (["http://example.com:8000", "--queries", "{q}"], "loopback"),
    (["http://127.0.0.1:9", "--queries", "{missing}"], "not found"),
    (["http://127.0.0.1:9"], "--queries"),
    (["http://127.0.0.1:9", "--queries", "{q}", "--requests", "0"], "requests"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    queries = tmp_path / "q.txt"
    queries.write_text("drill\n", encoding="utf-8")
    args = [a.format(q=queries, missing=tmp_path / "none.txt") for a in args]
    proc = subprocess.run([sys.executable, "-m", "leanrank.cli", "loadtest", *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and words in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def tiny_server(tmp_path, name: str, **batching) -> Server:
    config = server_config("bm25", "builtin:bm25", tmp_path / name, catalog="synthetic", data_dir=None,
                           recall_k=60, rerank_n=20, queue_size=8, dense=False)
    config["catalog"]["n_products"] = 300
    config["batching"].update(batching)
    return Server(config, tmp_path / name, ready_timeout=60)


@pytest.fixture
def queries_file(tmp_path):
    path = tmp_path / "queries.txt"
    path.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    return path


def test_loadtest_reports_qps_latency_status_counts_and_feedback_that_is_in_the_db(tmp_path, queries_file):
    server = tiny_server(tmp_path, "normal")
    with server:
        result = run_phase(server.url, queries_file, tmp_path / "out.json", requests=30, seconds=30,
                           concurrency=2, feedback=0.5)
    assert result["requests"] == 30 and sum(result["status_counts"].values()) == 30
    assert result["status_counts"] == {"200": 30} and result["errors_5xx"] == 0 and result["shed_rate"] == 0.0
    assert result["qps"] > 0 and 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert {"bm25", "queue", "rerank", "total"} <= set(result["server_timings_ms"])
    assert result["variants"] == {"bm25": 30} and result["tool"].startswith("locust 2.")
    acked = result["feedback"]["acknowledged"]
    assert acked and result["feedback"]["sent"] == len(acked) == result["feedback"]["status_counts"]["200"]
    check = check_feedback(tmp_path / "normal" / "feedback.sqlite", acked)
    assert check["all_present"] and check["found"] == len(acked) == check["rows_in_db"]


def test_overload_answers_only_200_or_503_and_keeps_every_acknowledged_feedback(tmp_path, queries_file):
    # one waiting request at most, batches held 50 ms for company: 16 users overload it at once
    server = tiny_server(tmp_path, "overload", max_batch=2, max_wait_ms=50, queue_size=1)
    with server:
        result = run_phase(server.url, queries_file, tmp_path / "over.json", requests=80, seconds=30,
                           concurrency=16, feedback=1.0)
    counts = result["status_counts"]
    assert sum(counts.values()) == result["requests"] == 80
    assert set(counts) <= {"200", "503"} and counts.get("503", 0) > 0 and counts.get("200", 0) > 0
    assert result["shed_rate"] == pytest.approx(counts["503"] / 80, abs=1e-4)
    acked = result["feedback"]["acknowledged"]   # a click on every 200 answer with items
    assert 0 < len(acked) == result["feedback"]["sent"] <= counts["200"]
    assert check_feedback(tmp_path / "overload" / "feedback.sqlite", acked)["all_present"]


def test_feedback_check_names_what_is_missing(tmp_path):
    import sqlite3

    from leanrank.serve.feedback_store import FeedbackStore

    store = FeedbackStore(tmp_path / "fb.sqlite")
    fid = store.add_feedback("r1", "p1", "click", 0.2, "bm25", None)
    store.close()
    ok = {"request_id": "r1", "item_id": "p1", "feedback_id": fid}
    lost = {"request_id": "r2", "item_id": "p2", "feedback_id": fid + 1}
    check = check_feedback(tmp_path / "fb.sqlite", [ok, lost])
    assert not check["all_present"] and check["found"] == 1 and check["missing"] == [lost]
    assert sqlite3.connect(tmp_path / "fb.sqlite").execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 1


def test_bench_serve_runs_three_phases_and_writes_the_results_files(tmp_path):
    from leanrank.bench.serve_loadtest import bars, parse_args, run_bench

    args = parse_args(["--catalog", "synthetic", "--compressed", "builtin:bm25", "--teacher", "builtin:bm25",
                       "--no-dense", "--recall-k", "60", "--requests", "12", "--overload-requests", "40",
                       "--overload-concurrency", "16", "--queue-size", "4", "--feedback", "0.5", "--paced-rate", "40",
                       "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "serve-loadtest")])
    doc = run_bench(args, log=lambda *a: None)
    assert [r["phase"] for r in doc["rows"]] == ["A", "A-paced", "B", "C"]
    assert [r["variant"] for r in doc["rows"]] == ["student-ort-int8", "student-ort-int8", "teacher-fp32",
                                                   "student-ort-int8"]
    assert doc["phases"]["A-paced"]["rate"] == 40 and doc["phases"]["A"]["rate"] is None
    for row in doc["rows"]:
        assert sum(row["status_counts"].values()) == row["requests"] > 0
        assert row["feedback_in_db"] == row["feedback_acked"]
    assert doc["bar"] == bars(doc["rows"]) and all(isinstance(v, bool) for v in doc["bar"].values())
    assert doc["bar"]["feedback_acknowledged_all_in_db"] and doc["bar"]["teacher_measured_same_run"]
    assert (tmp_path / "serve-loadtest.json").is_file()
    assert "| A | student-ort-int8 |" in (tmp_path / "serve-loadtest.md").read_text(encoding="utf-8")


def test_server_config_carries_the_serving_knobs(tmp_path):
    from leanrank.serve.config import ServeConfig

    config = server_config("s", "builtin:bm25", tmp_path, catalog="synthetic", data_dir=None, recall_k=60,
                           rerank_n=20, queue_size=8, dense_index="sq8", max_batch=2, max_wait_ms=1.5, threads=1,
                           cache=tmp_path / "shared")
    parsed = ServeConfig.from_dict(config)           # what `leanrank serve` will validate
    assert (parsed.recall.dense_index, parsed.recall.dense_runtime) == ("sq8", "onnx")
    assert parsed.recall.embedding_cache == str(tmp_path / "shared" / "embeddings")
    assert (parsed.batching.max_batch, parsed.batching.max_wait_ms, parsed.server.torch_threads) == (2, 1.5, 1)


def test_sigterm_unwinds_so_the_server_child_is_stopped():
    import os
    import signal

    from leanrank.bench.serve_loadtest import exit_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    try:
        exit_on_sigterm()
        with pytest.raises(SystemExit) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])      # let the handler run before leaving the block
        assert info.value.code == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, before)
