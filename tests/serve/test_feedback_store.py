"""The SQLite serving store: feedback is one fsync'ed transaction (all of it or none), request rows
commit without fsync, and everything reopens from the file."""

import sqlite3

import pytest

from leanrank.serve.feedback_store import FeedbackStore


def test_rows_survive_reopen_and_profiles_follow_feedback(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.add_request("r1", "search", "v1", "u_1", {"query_tokens": 2}, ["p1", "p2"], 12.5)
    store.add_feedback("r1", "p2", "click", 1.0, "v1", "u_1")
    store.add_feedback("r1", "p1", "purchase", 3.0, "v1", None)    # anonymous: no profile row
    store.close()
    again = FeedbackStore(tmp_path / "fb.sqlite")
    assert again.get_request("r1")["items"] == ["p1", "p2"] and again.get_request("nope") is None
    assert again.feedback_count() == 2 and again.profile("u_1") == ["p2"]


def test_feedback_is_all_or_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store._db.execute("DROP TABLE profile_events")    # the profile insert (second statement) now fails
    with pytest.raises(sqlite3.OperationalError):
        store.add_feedback("r1", "p1", "click", 1.0, "v1", "u_1")
    assert store.feedback_count() == 0                 # the feedback insert was rolled back with it
    assert store.add_feedback("r1", "p1", "click", 1.0, "v1", None) >= 1   # the connection still works


def test_feedback_fsyncs_and_request_rows_do_not(tmp_path, monkeypatch):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    seen = []

    class Spy:
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql.startswith("PRAGMA synchronous"):
                seen.append(sql.split("=")[1])
            return self.db.execute(sql, *args)

    monkeypatch.setattr(store, "_db", Spy(store._db))
    store.add_request("r1", "search", "v1", None, {}, ["p1"], 1.0)
    store.add_feedback("r1", "p1", "click", 1.0, "v1", None)
    assert seen == ["NORMAL", "FULL"]
