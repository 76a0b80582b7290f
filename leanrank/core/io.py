"""Atomic file and folder writes: never leave a half-written file or folder where a user's was."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)       # mkstemp makes 0600; results are meant to be shared
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``directory``; when the block succeeds it replaces
    ``directory`` (the old one is moved aside, then deleted), when it fails it is removed and
    ``directory`` is untouched."""
    directory = Path(directory)
    tmp, old = directory.with_name(f".{directory.name}.tmp"), directory.with_name(f".{directory.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)          # left by an earlier save that was killed
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (indent 2, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_default) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy/torch arrays of any shape, and their scalars
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_safetensors_dir(directory: str | os.PathLike, device: str = "cpu") -> dict:
    """Every tensor of the ``*.safetensors`` files in a model folder (never a pickle)."""
    from safetensors.torch import load_file

    state: dict = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        state.update(load_file(str(f), device=device))
    return state


def weights_digest(folder: str | os.PathLike | None, patterns: tuple[str, ...] = ("*.safetensors", "*.onnx")):
    """A ``hashlib.sha256`` fed with each weight file of ``folder`` (resolved path, size, mtime):
    the start of a cache key that changes whenever the weights do. ``None`` when there are none."""
    import hashlib

    if not folder or not Path(folder).is_dir():
        return None
    files = sorted(f for pattern in patterns for f in Path(folder).glob(pattern))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest
