"""Tests for leanrank.data.download against a loopback HTTP server (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from leanrank.core.errors import LeanrankError
from leanrank.data import download as dl
from leanrank.data.download import (
    REGISTRY,
    DatasetSource,
    ManualDownloadRequired,
    RemoteFile,
    download,
    download_file,
    list_sources,
)

PAYLOAD = bytes((i * 7919 + (i >> 8)) % 251 for i in range(300_000))
SHA = hashlib.sha256(PAYLOAD).hexdigest()
SIZE = len(PAYLOAD)


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    no_range: bool = False  # ignore Range, always answer 200 with the whole body
    drop_first: bool = False  # first request: send half the body, then close the connection
    fail_500: int = 0  # answer this many requests with 500 first
    log: list[dict] = field(default_factory=list)  # one entry per request


class Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        st = self.state
        entry = {"path": self.path, "range": self.headers.get("Range"), "sent": 0, "status": None}
        st.log.append(entry)
        if st.fail_500 > 0:
            st.fail_500 -= 1
            entry["status"] = 500
            self.send_error(500, "boom")
            return
        body = st.files.get(self.path)
        if body is None:
            entry["status"] = 404
            self.send_error(404, "not found")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", entry["range"] or "")
        if m and not st.no_range:
            start = int(m.group(1))
            if start >= len(body):
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            entry["status"] = 206
        else:
            self.send_response(200)
            entry["status"] = 200
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if st.drop_first:
            st.drop_first = False
            chunk = chunk[: len(chunk) // 2]
            self.close_connection = True
        entry["sent"] = len(chunk)  # before writing: the client may return before write() does
        self.wfile.write(chunk)
        self.wfile.flush()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)
    state = ServerState(files={"/data/file.bin": PAYLOAD})
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def remote(state, path="/data/file.bin", sha=SHA, size=SIZE, filename="sub/file.bin") -> RemoteFile:
    return RemoteFile(url=state.base + path, filename=filename, sha256=sha, size=size)


def fetch(state, dest: Path, **kw) -> Path:
    f = kw.pop("f", None) or remote(state)
    return download_file(f, dest, progress=False, timeout=5, **kw)


def test_full_download_via_registry(server, tmp_path):
    reg = {"toy": DatasetSource("toy", "toy data", files=(remote(server),), subdir="rec/toy")}
    paths = download("toy", tmp_path, registry=reg, progress=False, timeout=5)
    dest = tmp_path / "rec/toy/sub/file.bin"
    assert paths == [dest]
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("file.bin.part").exists()
    assert [e["range"] for e in server.log] == [None]


def test_progress_bar_does_not_break_download(server, tmp_path, capsys):
    dest = download_file(remote(server), tmp_path / "f.bin", progress=True, timeout=5)
    assert dest.read_bytes() == PAYLOAD


def test_resume_from_part_sends_range(server, tmp_path):
    dest = tmp_path / "file.bin"
    n = 100_000
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:n])
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.log) == 1
    assert server.log[0]["range"] == f"bytes={n}-"
    assert server.log[0]["status"] == 206
    assert server.log[0]["sent"] == len(PAYLOAD) - n


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.no_range = True
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"garbage that must be discarded")
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.log[0]["range"] is not None and server.log[0]["status"] == 200


def test_dropped_connection_is_resumed(server, tmp_path):
    server.drop_first = True
    dest = tmp_path / "file.bin"
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.log) == 2
    assert server.log[0]["range"] is None
    assert server.log[1]["range"] == f"bytes={server.log[0]['sent']}-"
    assert server.log[1]["sent"] == len(PAYLOAD) - server.log[0]["sent"]


def test_complete_part_without_size_gets_416_and_is_verified(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD)
    fetch(server, dest, f=remote(server, size=None))
    assert dest.read_bytes() == PAYLOAD
    assert [e["status"] for e in server.log] == [416]


def test_checksum_mismatch_removes_everything(server, tmp_path):
    dest = tmp_path / "file.bin"
    bad = "0" * 64
    with pytest.raises(LeanrankError) as err:
        fetch(server, dest, f=remote(server, sha=bad))
    msg = str(err.value)
    assert "sub/file.bin" in msg and bad in msg and SHA in msg
    assert not dest.exists()
    assert not dest.with_name("file.bin.part").exists()


def test_size_mismatch_is_an_error(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(LeanrankError, match="checksum mismatch"):
        fetch(server, dest, f=remote(server, size=len(PAYLOAD) + 1))
    assert not dest.exists() and not dest.with_name("file.bin.part").exists()


def test_existing_correct_file_is_skipped(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD)
    assert fetch(server, dest) == dest
    assert server.log == []


def test_existing_wrong_file_is_not_overwritten(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"my own file")
    with pytest.raises(LeanrankError, match="move it away"):
        fetch(server, dest)
    assert dest.read_bytes() == b"my own file"
    assert server.log == []


def test_404_is_a_clear_error_without_retry(server, tmp_path):
    f = remote(server, path="/missing.bin")
    with pytest.raises(LeanrankError) as err:
        fetch(server, tmp_path / "file.bin", f=f)
    assert f.url in str(err.value) and "404" in str(err.value)
    assert len(server.log) == 1


def test_500_then_success_is_retried(server, tmp_path):
    server.fail_500 = 1
    dest = fetch(server, tmp_path / "file.bin")
    assert dest.read_bytes() == PAYLOAD
    assert [e["status"] for e in server.log] == [500, 200]


def test_persistent_500_gives_up_after_retries(server, tmp_path):
    server.fail_500 = 10
    with pytest.raises(LeanrankError, match="after 3 attempt"):
        fetch(server, tmp_path / "file.bin", retries=2)
    assert len(server.log) == 3


def test_unknown_name_lists_known_names():
    with pytest.raises(LeanrankError) as err:
        download("nope", "/nonexistent", progress=False)
    for name in ("amazon-beauty", "amazon-sports", "homedepot", "esci", "wands"):
        assert name in str(err.value)


def test_manual_dataset_raises_instructions(tmp_path):
    with pytest.raises(ManualDownloadRequired) as err:
        download("homedepot", tmp_path, progress=False)
    msg = str(err.value)
    assert "kaggle" in msg and "home-depot-product-search-relevance" in msg
    assert str(tmp_path / "search/homedepot" / "train.csv.zip") in msg
    assert isinstance(err.value, LeanrankError)
    assert not any(tmp_path.iterdir())


def test_path_escaping_filename_is_rejected(server, tmp_path):
    reg = {"evil": DatasetSource("evil", "x", files=(remote(server, filename="../x.bin"),))}
    with pytest.raises(LeanrankError, match="relative path"):
        download("evil", tmp_path, registry=reg, progress=False)
    assert server.log == []


def test_registry_and_list_sources():
    for src in REGISTRY.values():
        assert src.files or src.manual
        for f in src.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.url.startswith("https://")
    rows = {r["name"]: r for r in list_sources()}
    assert rows["amazon-beauty"]["how"] == "download" and rows["amazon-beauty"]["files"] == 2
    assert rows["homedepot"]["how"] == "manual" and rows["homedepot"]["bytes"] is None
