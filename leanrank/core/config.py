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


def read_yaml_sections(path, sections) -> dict:
    """A YAML config file whose top level may only hold ``sections``; one error line for a missing
    file, invalid YAML or an unknown section. ``path=None`` → ``{}``."""
    from pathlib import Path

    if path is None:
        return {}
    import yaml

    if not Path(path).is_file():
        raise LeanrankError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LeanrankError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LeanrankError(f"{path}: expected a mapping with sections {', '.join(sections)}")
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise LeanrankError(f"{path}: unknown section {unknown[0]!r}; allowed: {', '.join(sections)}")
    return data
