"""Config dataclasses from plain mappings (YAML, JSON): unknown keys named, lists made tuples."""

from __future__ import annotations

from dataclasses import fields

from leanrank.core.errors import LeanrankError


def from_mapping(cls, values: dict | None, what: str):
    """``cls(**values)`` after checking every key is a field of ``cls`` (one error line naming the
    key and the allowed ones); lists become tuples so frozen configs stay hashable.

    >>> from_mapping(SomeConfig, {"steps": 10}, "distill")      # doctest: +SKIP
    """
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise LeanrankError(f"unknown {what} option {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
