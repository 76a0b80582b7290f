"""The RecBole 1.2.1 SASRec peer of the sequential-recommendation benchmark, run out of process.

RecBole needs its own environment (``numpy<2``, ``setuptools<81``, ``pandas<3``, ``torch==2.13.0``;
versions pinned in ``benchmarks/peers/recbole-constraints.txt``), so the project never depends on it:
``ensure_recbole_venv`` builds ``.venv-recbole`` (``make recbole-venv``), ``write_atomic_files``
writes the leave-one-out data as a RecBole atomic ``.inter`` file, and ``run_recbole_peer`` runs
``benchmarks/peers/recbole_sasrec.py`` in that environment under a training-time budget and
returns its result JSON (schema in that script's docstring).

>>> import tempfile
>>> from leanrank.data.sequences import from_sequences
>>> path = write_atomic_files(from_sequences([["a", "b", "c", "d"]], name="toy"), tempfile.mkdtemp())
>>> path.name, path.read_text().splitlines()[:3]
('toy.inter', ['user_id:token\\titem_id:token\\ttimestamp:float', '0\\t1\\t0', '0\\t2\\t1'])
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from leanrank.core.errors import LeanrankError
from leanrank.core.io import atomic_path

if TYPE_CHECKING:
    from leanrank.data.sequences import SequenceDataset

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "peers" / "recbole_sasrec.py"
CONSTRAINTS = ROOT / "benchmarks" / "peers" / "recbole-constraints.txt"
STAMP = ".recbole-installed"
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
INSTALL_STEPS = (  # torch first (the CPU wheel), then RecBole with the caps it needs
    ("torch==2.13.0",),
    # pandas 3's copy-on-write turns RecBole's chained fillna(inplace=True) into a silent no-op
    ("recbole==1.2.1", "numpy<2", "setuptools<81", "pandas<3"),
)


def write_atomic_files(dataset: SequenceDataset, directory: str | Path) -> Path:
    """Write ``DIRECTORY/NAME.inter``: one line per interaction, users in dataset order, the item's
    position in the user's sequence (0, 1, ...) as timestamp; item tokens are the dataset's item
    ids. Written to a temporary file, then renamed. Returns the path."""
    name = _check_name(dataset.name)
    users = dataset.user_ids if len(dataset.user_ids) == len(dataset.sequences) else None
    path = Path(directory) / f"{name}.inter"
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.write(HEADER)
        for row, seq in enumerate(dataset.sequences):
            user = users[row] if users is not None else str(row + 1)
            f.writelines(f"{user}\t{int(item)}\t{pos}\n" for pos, item in enumerate(seq))
    return path


def ensure_recbole_venv(path: str | Path = ".venv-recbole", log=print) -> Path:
    """Build the RecBole virtual environment at ``path`` (relative to the repository root) unless a
    completed one with the current constraints is there; returns its Python. Takes ~1 minute."""
    venv = _venv_dir(path)
    python, stamp = venv / "bin" / "python", venv / STAMP
    wanted = CONSTRAINTS.read_text(encoding="utf-8")
    if python.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
        return python
    start = time.perf_counter()
    log(f"building the RecBole environment in {venv} ...")
    _run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    for packages in INSTALL_STEPS:
        _run([str(python), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), *packages],
             f"pip install {' '.join(packages)}")
    _run([str(python), "-c", "import recbole.quick_start"], "import recbole")
    stamp.write_text(wanted, encoding="utf-8")
    log(f"RecBole environment ready ({time.perf_counter() - start:.0f} s)")
    return python


def recbole_python(path: str | Path = ".venv-recbole") -> Path | None:
    """The Python of a completed RecBole environment at ``path``, else None (builds nothing)."""
    venv = _venv_dir(path)
    return venv / "bin" / "python" if (venv / STAMP).is_file() and (venv / "bin" / "python").is_file() else None


def run_recbole_peer(
    dataset: SequenceDataset,
    work_dir: str | Path,
    max_train_seconds: float,
    threads: int | None = None,
    timeout: float | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    venv: str | Path = ".venv-recbole",
    extra_args: tuple[str, ...] = (),
) -> dict:
    """Write the atomic file under ``WORK_DIR/atomic/``, run the RecBole SASRec script in the RecBole
    environment (built if missing) with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in its environment
    only, its output in ``WORK_DIR/recbole.log``, and return ``WORK_DIR/result.json`` parsed.

    Raises LeanrankError naming the log file when the run fails, times out or returns a result
    whose test-user count is not the dataset's.
    """
    if not SCRIPT.is_file():
        raise LeanrankError(f"{SCRIPT} not found: run from a source checkout of leanrank")
    work = Path(work_dir).resolve()
    name = _check_name(dataset.name)
    atomic_dir = work / "atomic" / name  # RecBole reads DATA_PATH/NAME/NAME.inter
    write_atomic_files(dataset, atomic_dir)
    python = ensure_recbole_venv(venv)
    out, log_path = work / "result.json", work / "recbole.log"
    out.unlink(missing_ok=True)
    cmd = [str(python), str(SCRIPT), "--atomic-dir", str(atomic_dir), "--dataset", name, "--out", str(out),
           "--max-train-seconds", str(max_train_seconds)]
    cmd += ["--threads", str(threads)] if threads else []
    cmd += ["--epochs", str(epochs)] if epochs else []
    cmd += ["--seed", str(seed)] if seed is not None else []
    cmd += list(extra_args)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise LeanrankError(f"RecBole peer timed out after {timeout} s; log: {log_path}") from None
    if rc != 0 or not out.is_file():
        raise LeanrankError(f"RecBole peer failed (exit code {rc}): {_last_line(log_path)}; log: {log_path}")
    result = json.loads(out.read_text(encoding="utf-8"))
    if result.get("test_users") != len(dataset.sequences):
        raise LeanrankError(f"RecBole peer evaluated {result.get('test_users')} test users, the dataset has "
                            f"{len(dataset.sequences)}; log: {log_path}")
    return result


def _venv_dir(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else ROOT / path


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise LeanrankError(f"dataset name {name!r} cannot name a RecBole atomic file (letters, digits, _.-)")
    return name


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LeanrankError(f"building the RecBole environment failed at {what}: " + " | ".join(tail))


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"
