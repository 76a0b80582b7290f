"""Bandit state stores: SQLite survives a restart, every update is atomic, replicas share state."""

from __future__ import annotations

import numpy as np
import pytest

from leanrank.core.errors import LeanrankError
from leanrank.serve.bandit import BanditConfig, make_bandit
from leanrank.serve.bandit_store import MemoryStore, SQLiteStore


def pulls(bandit) -> dict[str, int]:
    return {a: s["pulls"] for a, s in bandit.stats().items()}


def feed(bandit, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        ctx = {"category": "tools" if rng.random() < 0.5 else "paint", "query_tokens": 2}
        arm = bandit.choose(ctx)
        bandit.update(arm, float(rng.random() < (0.8 if arm == "b" else 0.3)), ctx, latency_ms=5.0)


@pytest.mark.parametrize("policy", ["thompson", "linucb"])
def test_sqlite_state_survives_reopening(tmp_path, policy):
    path = tmp_path / "state" / "bandit.sqlite"
    config = BanditConfig(policy=policy, arms=("a", "b"))
    with SQLiteStore(path) as store:
        first = make_bandit(config, store)
        feed(first, 40)
        before = first.stats()
    with SQLiteStore(path) as store:  # a new process would see the same file
        again = make_bandit(config, store)
        assert again.stats() == before
        again.update("a", 1.0, {"category": "tools"})
        assert pulls(again)["a"] == before["a"]["pulls"] + 1
        assert sum(pulls(again).values()) == 41


def test_exception_mid_update_leaves_state_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "bandit.sqlite"
    config = BanditConfig(policy="linucb", arms=("a", "b"))
    store = SQLiteStore(path)
    bandit = make_bandit(config, store)
    feed(bandit, 10)
    before = bandit.stats()
    real_write = SQLiteStore._write

    def write_then_crash(self, *args):
        real_write(self, *args)  # the row is written inside the transaction ...
        raise RuntimeError("power cut")  # ... and the commit never happens

    monkeypatch.setattr(SQLiteStore, "_write", write_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        bandit.update("a", 1.0, {"category": "tools"})
    monkeypatch.undo()
    assert bandit.stats() == before
    with SQLiteStore(path) as other:
        assert make_bandit(config, other).stats() == before
    bandit.update("a", 1.0)  # the store is still usable after the rollback
    assert pulls(bandit)["a"] == before["a"]["pulls"] + 1
    store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_failing_fn_and_non_finite_state_write_nothing(tmp_path, kind):
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.sqlite")
    store.update("k", "a", lambda old: {"pulls": 1})

    def boom(old):
        raise ValueError("mid-update")

    with pytest.raises(ValueError):
        store.update("k", "a", boom)
    with pytest.raises(LeanrankError, match="finite"):
        store.update("k", "a", lambda old: {"pulls": 2, "reward_sum": float("nan")})
    assert store.load("k") == {"a": {"pulls": 1}}
    assert store.load("other") == {}


def test_two_replicas_share_one_sqlite_file(tmp_path):
    path = tmp_path / "shared.sqlite"
    config = BanditConfig(policy="ucb1", arms=("a", "b"))
    one, two = make_bandit(config, SQLiteStore(path)), make_bandit(config, SQLiteStore(path))
    for i in range(10):
        (one if i % 2 else two).update("a" if i < 6 else "b", 1.0)
    assert pulls(one) == {"a": 6, "b": 4}  # each update reads the others' writes first
    two.refresh()
    assert two.stats() == one.stats()


def test_names_and_policies_keep_separate_state():
    store = MemoryStore()
    search = make_bandit(BanditConfig(policy="ucb1", arms=("a",)), store, name="search")
    recs = make_bandit(BanditConfig(policy="ucb1", arms=("a",)), store, name="recs")
    search.update("a", 1.0)
    assert pulls(recs) == {"a": 0}
    assert pulls(make_bandit(BanditConfig(policy="thompson", arms=("a",)), store, name="search")) == {"a": 0}
    assert pulls(make_bandit(BanditConfig(policy="ucb1", arms=("a",)), store, name="search")) == {"a": 1}


def test_bad_sqlite_file_and_option_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LeanrankError, match="cannot open bandit store"):
        SQLiteStore(junk)
    with pytest.raises(LeanrankError, match="synchronous"):
        SQLiteStore(tmp_path / "x.sqlite", synchronous="OFF")


def test_threads_updating_one_sqlite_store_lose_nothing(tmp_path):
    import threading

    bandit = make_bandit(BanditConfig(policy="thompson", arms=("a", "b")), SQLiteStore(tmp_path / "t.sqlite"))

    def work():
        for _ in range(25):
            bandit.update(bandit.choose(), 1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(pulls(bandit).values()) == 100


def test_linucb_state_of_another_feature_layout_is_refused():
    store = MemoryStore()
    store.update("default:linucb", "a", lambda old: {"pulls": 1, "dim": 5, "A": "", "b": ""})
    with pytest.raises(LeanrankError, match="5 features"):
        make_bandit(BanditConfig(policy="linucb", arms=("a",)), store)
