"""Errors a user can act on, and lazy imports of optional dependencies."""

from __future__ import annotations

import importlib
from types import ModuleType


class LeanrankError(Exception):
    """An error caused by user input: the CLI prints its message on one line and exits 2."""


class DataError(LeanrankError):
    """Bad or missing data; the message names the file (and line when known)."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


def require(module: str, pip_name: str | None = None) -> ModuleType:
    """Import an optional dependency or raise an error naming the exact ``pip install``.

    >>> require("json").dumps([1])
    '[1]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in tests via a fake name
        name = pip_name or module.split(".")[0]
        raise LeanrankError(
            f"optional dependency '{module}' is missing: pip install {name}"
        ) from exc
