"""A real uvicorn server on 127.0.0.1 (random free port, in a thread) answers /search and shuts down."""

from __future__ import annotations

import socket
import threading
import time

import pytest

uvicorn = pytest.importorskip("uvicorn")

from test_app import http_client_module, make_app, make_config  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def event_loop() -> str:
    """``auto`` (uvloop, as ``leanrank serve`` runs) unless locust, imported in this process by the
    load-test tests, has gevent-patched the sockets: uvloop then hangs, so use plain asyncio."""
    try:
        from gevent import monkey
    except ImportError:
        return "auto"
    return "asyncio" if monkey.is_module_patched("socket") else "auto"


def test_real_uvicorn_answers_search_and_shuts_down_cleanly(tmp_path):
    httpx = http_client_module()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(make_config(tmp_path)), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False, loop=event_loop()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        r = httpx.post(f"{base}/search", json={"query": "cordless drill", "k": 3}, timeout=10)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 3 and r.json()["variant"] in ("a", "b")
        r = httpx.post(f"{base}/search", content=b"{oops", headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == 422 and r.json()["error"]
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert not thread.is_alive()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=1)
