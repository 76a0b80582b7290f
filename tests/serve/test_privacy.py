"""User-id hashing: keyed, stable, never the raw id; a missing secret is a clear start-up error."""

from __future__ import annotations

import pytest

from leanrank.core.errors import LeanrankError
from leanrank.serve.config import PrivacyConfig
from leanrank.serve.privacy import UserHasher, hasher_from_env, query_for_log


def test_hash_is_keyed_stable_and_hides_the_id():
    a, b = UserHasher(b"k" * 20), UserHasher(b"j" * 20)
    assert a.hash("alice") == a.hash("alice") != a.hash("bob")
    assert a.hash("alice") != b.hash("alice")
    assert "alice" not in a.hash("alice") and a.hash("alice").startswith("u_") and len(a.hash("x")) == 34
    assert "k" * 20 not in repr(a)


def test_missing_secret_is_a_clear_error_unless_the_demo_flag_is_set():
    with pytest.raises(LeanrankError, match=r"\$MY_SECRET is not set"):
        hasher_from_env(PrivacyConfig(secret_env="MY_SECRET"), environ={})
    with pytest.raises(LeanrankError, match="shorter than 16 bytes"):
        hasher_from_env(PrivacyConfig(secret_env="MY_SECRET"), environ={"MY_SECRET": "short"})
    with pytest.warns(UserWarning, match="insecure_dev_secret"):
        dev = hasher_from_env(PrivacyConfig(secret_env="MY_SECRET", insecure_dev_secret=True), environ={})
    real = hasher_from_env(PrivacyConfig(secret_env="MY_SECRET"), environ={"MY_SECRET": "s" * 32})
    assert dev.hash("u") != real.hash("u")


def test_query_text_is_logged_only_when_enabled():
    assert query_for_log("cordless drill", False) == {"query_chars": 14}
    assert query_for_log("cordless drill", True) == {"query": "cordless drill"}


def test_cli_serve_without_secret_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from leanrank.cli import main

    config = tmp_path / "serve.yaml"
    config.write_text("variants: {a: builtin:bm25}\nprivacy: {secret_env: LEANRANK_TEST_NO_SUCH_SECRET}\n")
    monkeypatch.delenv("LEANRANK_TEST_NO_SUCH_SECRET", raising=False)
    monkeypatch.setattr("sys.argv", ["leanrank", "serve", str(config)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "$LEANRANK_TEST_NO_SUCH_SECRET is not set" in capsys.readouterr().err
