"""Durable serving records: SQLite for requests, feedback and user profiles; JSONL request log.

Every write commits before the call returns. Feedback commits with ``synchronous=FULL`` (fsync),
so an acknowledged feedback survives a crash; request rows (what a later feedback is matched
against) commit with ``NORMAL`` — no fsync per search (~2 ms on this machine's disk), and a crash
may lose the last few of them, never a feedback (the next FULL commit syncs them too).

User ids arrive here already HMAC-hashed (``leanrank.serve.privacy``); nothing in this module
ever sees a raw id.

Request log lines (one JSON object each, appended and flushed):

* ``{"type": "search", "request_id", "ts", "variant", "user", "context", "k", "items", "timings_ms", ...}``
* ``{"type": "recommend", "request_id", "ts", "variant", "user", "fallback", "items", "timings_ms"}``
* ``{"type": "feedback", "request_id", "ts", "variant", "item_id", "event", "reward", "user",
  "context", "latency_ms"}`` — what a replay of the bandit needs: the arm, its context and reward.

>>> import tempfile, os
>>> store = FeedbackStore(os.path.join(tempfile.mkdtemp(), "fb.sqlite"))
>>> store.add_request("r1", "search", "teacher", "u_ab", {"k": 3}, ["p1"], 12.5)
>>> store.get_request("r1")["variant"]
'teacher'
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, variant TEXT NOT NULL,
    user_hash TEXT, context TEXT NOT NULL, items TEXT NOT NULL, latency_ms REAL NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, ts REAL NOT NULL, item_id TEXT NOT NULL,
    event TEXT NOT NULL, reward REAL NOT NULL, variant TEXT NOT NULL, user_hash TEXT);
CREATE TABLE IF NOT EXISTS profile_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_hash TEXT NOT NULL, ts REAL NOT NULL, item_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS profile_user ON profile_events (user_hash, id);
"""


class FeedbackStore:
    """One SQLite file; thread-safe (one connection behind a lock), every write one committed transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _commit(self, durable: bool, statements: list[tuple[str, tuple]]) -> list[sqlite3.Cursor]:
        """Run ``statements`` in one transaction; ``durable`` = fsync before returning."""
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("BEGIN")
            try:
                cursors = [self._db.execute(sql, params) for sql, params in statements]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cursors

    def add_request(self, request_id: str, kind: str, variant: str, user_hash: str | None, context: dict,
                    items: list[str], latency_ms: float) -> None:
        self._commit(False, [("INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (request_id, time.time(), kind, variant, user_hash, json.dumps(context),
                               json.dumps(items), float(latency_ms)))])

    def get_request(self, request_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT request_id, ts, kind, variant, user_hash, context, items, latency_ms "
                                   "FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            return None
        return {"request_id": row[0], "ts": row[1], "kind": row[2], "variant": row[3], "user_hash": row[4],
                "context": json.loads(row[5]), "items": json.loads(row[6]), "latency_ms": row[7]}

    def add_feedback(self, request_id: str, item_id: str, event: str, reward: float, variant: str,
                     user_hash: str | None) -> int:
        """Insert the feedback (and the item into the user's profile) in one fsync'ed transaction."""
        now = time.time()
        statements = [("INSERT INTO feedback (request_id, ts, item_id, event, reward, variant, user_hash) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (request_id, now, item_id, event, float(reward), variant,
                                                       user_hash))]
        if user_hash is not None:
            statements.append(("INSERT INTO profile_events (user_hash, ts, item_id) VALUES (?, ?, ?)",
                               (user_hash, now, item_id)))
        return int(self._commit(True, statements)[0].lastrowid)

    def feedback_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def profile(self, user_hash: str, limit: int = 200) -> list[str]:
        """The user's last ``limit`` interacted items, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT item_id FROM profile_events WHERE user_hash = ? ORDER BY id DESC "
                                    "LIMIT ?", (user_hash, limit)).fetchall()
        return [r[0] for r in reversed(rows)]


class RequestLog:
    """Append-only JSONL; each line written in one ``write`` and flushed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the app

    def write(self, record: dict) -> None:
        line = json.dumps({"ts": round(time.time(), 3), **record}, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
