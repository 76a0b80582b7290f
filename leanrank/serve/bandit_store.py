"""Where bandit state lives: ``SQLiteStore`` (the default, one file, survives restarts) and
``MemoryStore`` (tests, offline replay).

State is one small JSON object per (key, arm): the arm's sufficient statistics (pulls, reward
sums, LinUCB's ``A`` and ``b``). A bandit never stores contexts, queries or user ids, only these
sums. The ``BanditStore`` protocol has two methods, so another backend is one class; Redis for
several replicas, for example, would be a hash per key (field = arm, value = the JSON):

* ``load(key)``: ``HGETALL key``, each value ``json.loads``-ed;
* ``update(key, arm, fn)``: ``WATCH key``; ``HGET key arm``; ``new = fn(old)``;
  ``MULTI; HSET key arm json.dumps(new); EXEC`` (retry on ``WatchError``); then ``load(key)``.

>>> store = MemoryStore()
>>> store.update("demo:ucb1", "a", lambda old: {"pulls": (old or {}).get("pulls", 0) + 1})
{'a': {'pulls': 1}}
>>> store.load("demo:ucb1")
{'a': {'pulls': 1}}
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from leanrank.core.errors import LeanrankError

ArmFn = Callable[[dict | None], dict]


class BanditStore(Protocol):
    """Persistent per-arm bandit state; every ``update`` is atomic.

    ``update`` must run ``fn`` on the arm's current state (``None`` if the arm has none yet) and
    store its result in one transaction: if ``fn`` or the write raises, nothing changes. It returns
    every arm's state under ``key`` after the write, so a replica sees the others' updates.
    """

    def load(self, key: str) -> dict[str, dict]:
        """Arm → state under ``key`` (``{}`` when there is none)."""
        ...

    def update(self, key: str, arm: str, fn: ArmFn) -> dict[str, dict]:
        """Atomically replace ``arm``'s state by ``fn(old_state)``; return all arms' states."""
        ...


def _dumps(state: dict) -> str:
    try:
        return json.dumps(state, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # NaN or infinity: refused before anything is written
        raise LeanrankError(f"bandit state must be finite: {exc}") from exc


class MemoryStore:
    """In-process store (tests, replay); state is kept as JSON text, exactly as the SQLite store
    keeps it, so both behave the same. Thread-safe; lost when the process ends.

    >>> MemoryStore().load("nothing")
    {}
    """

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> dict[str, dict]:
        with self._lock:
            return {arm: json.loads(s) for arm, s in self._data.get(key, {}).items()}

    def update(self, key: str, arm: str, fn: ArmFn) -> dict[str, dict]:
        with self._lock:
            arms = self._data.get(key, {})
            old = arms.get(arm)
            text = _dumps(fn(json.loads(old) if old is not None else None))
            self._data[key] = {**arms, arm: text}  # swapped in whole, only after fn succeeded
            return {a: json.loads(s) for a, s in self._data[key].items()}


class SQLiteStore:
    """One SQLite file (WAL) holding the state of any number of bandits.

    Each ``update`` is one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction (read, ``fn``, write), so a
    crash or an exception never leaves half an update, and several processes may share the file
    (writers wait up to ``timeout_s``). ``synchronous="NORMAL"`` (default) survives a process
    crash; after a power loss the last few updates may be missing, never torn. Use ``"FULL"`` to
    fsync every update.

    >>> store = SQLiteStore("runs/bandit.sqlite")                         # doctest: +SKIP
    >>> bandit = make_bandit(BanditConfig(arms=("a", "b")), store)       # doctest: +SKIP
    """

    def __init__(self, path: str | Path, synchronous: str = "NORMAL", timeout_s: float = 5.0):
        if synchronous not in ("NORMAL", "FULL"):
            raise LeanrankError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS bandit_arms (key TEXT NOT NULL, arm TEXT NOT NULL, "
                "state TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (key, arm))")
        except sqlite3.DatabaseError as exc:
            raise LeanrankError(f"{self.path}: cannot open bandit store: {exc}") from exc

    def load(self, key: str) -> dict[str, dict]:
        with self._lock:
            return self._read(key)

    def update(self, key: str, arm: str, fn: ArmFn) -> dict[str, dict]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT state FROM bandit_arms WHERE key = ? AND arm = ?",
                                         (key, arm)).fetchone()
                new = fn(json.loads(row[0]) if row else None)
                self._write(key, arm, _dumps(new))
                states = self._read(key)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return states

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, key: str, arm: str, text: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO bandit_arms (key, arm, state, updated_at) VALUES (?, ?, ?, ?)",
                           (key, arm, text, time.time()))

    def _read(self, key: str) -> dict[str, dict]:
        rows = self._conn.execute("SELECT arm, state FROM bandit_arms WHERE key = ? ORDER BY arm", (key,))
        return {arm: json.loads(state) for arm, state in rows}
