"""User ids are keyed-hashed (HMAC-SHA256) before they are stored, logged or used as bandit context.

The key comes from an environment variable (``privacy.secret_env``); without it the server does
not start, unless ``privacy.insecure_dev_secret`` is set (demo only: the key is then public, so
the hashes can be reversed by anyone who guesses the ids).

>>> p = UserHasher(b"k" * 32)
>>> p.hash("alice") == p.hash("alice") != p.hash("bob")
True
>>> "alice" in p.hash("alice")
False
"""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings

from leanrank.core.errors import LeanrankError
from leanrank.serve.config import PrivacyConfig

MIN_SECRET_BYTES = 16
DEV_SECRET = b"leanrank-insecure-dev-secret-do-not-use-in-production"


class UserHasher:
    """``hash(user_id)`` → ``"u_" + 32 hex chars`` of HMAC-SHA256(secret, user_id)."""

    def __init__(self, secret: bytes):
        if len(secret) < MIN_SECRET_BYTES:
            raise LeanrankError(f"the user-id HMAC secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def hash(self, user_id: str) -> str:
        digest = hmac.new(self._secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return "u_" + digest[:32]

    def __repr__(self) -> str:  # never print the key
        return "UserHasher(<secret>)"


def hasher_from_env(config: PrivacyConfig, environ: dict | None = None) -> UserHasher:
    """The hasher keyed by ``$<secret_env>``; a clear error when it is unset (or too short)."""
    env = os.environ if environ is None else environ
    value = env.get(config.secret_env, "")
    if value:
        if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
            raise LeanrankError(f"${config.secret_env} is shorter than {MIN_SECRET_BYTES} bytes; "
                                f"use e.g. `export {config.secret_env}=$(openssl rand -hex 32)`")
        return UserHasher(value.encode("utf-8"))
    if config.insecure_dev_secret:
        warnings.warn(f"${config.secret_env} is unset: hashing user ids with the public development key "
                      "(privacy.insecure_dev_secret); never use this in production", stacklevel=2)
        return UserHasher(DEV_SECRET)
    raise LeanrankError(f"${config.secret_env} is not set: user ids are HMAC-hashed with it before they are "
                        f"stored or logged. Set it (e.g. `export {config.secret_env}=$(openssl rand -hex 32)`), "
                        "or set privacy.insecure_dev_secret: true for a local demo")


def query_for_log(query: str, log_queries: bool) -> dict:
    """What the request log keeps of a query: the text only when enabled, else its length."""
    return {"query": query} if log_queries else {"query_chars": len(query)}
