"""The RecBole SASRec peer: atomic files, the subprocess wrapper, and (slow) a real tiny run."""

from __future__ import annotations

import os
import random
import stat

import pytest

from leanrank.bench.recbole_peer import (
    CONSTRAINTS,
    STAMP,
    recbole_python,
    run_recbole_peer,
    write_atomic_files,
)
from leanrank.core.errors import LeanrankError
from leanrank.data.sequences import from_sequences


@pytest.fixture
def tiny_sequences():
    seqs = [["a", "b", "c", "d", "e"], ["c", "a", "f", "a", "b", "g"], ["g", "f", "e", "d"]]
    return from_sequences(seqs, name="tiny", user_ids=["u1", "u2", "u3"])


def _read(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def test_atomic_file_format_and_positions(tmp_path, tiny_sequences):
    path = write_atomic_files(tiny_sequences, tmp_path / "tiny")
    assert path == tmp_path / "tiny" / "tiny.inter"
    header, rows = _read(path)
    assert header == "user_id:token\titem_id:token\ttimestamp:float"
    assert all(len(r) == 3 for r in rows)
    assert len(rows) == sum(len(s) for s in tiny_sequences.sequences)
    for user, seq in zip(tiny_sequences.user_ids, tiny_sequences.sequences):
        mine = [r for r in rows if r[0] == user]
        assert [float(r[2]) for r in mine] == list(range(len(seq)))      # position = timestamp
        assert [int(r[1]) for r in mine] == seq.tolist()                  # item tokens = our ids
    assert [p.name for p in path.parent.iterdir()] == ["tiny.inter"]      # no temporary left behind


def test_atomic_file_agrees_with_leave_one_out(tmp_path, tiny_sequences):
    _, rows = _read(write_atomic_files(tiny_sequences, tmp_path))
    random.Random(0).shuffle(rows)  # RecBole orders by timestamp, not by line
    by_user: dict[str, list[tuple[float, int]]] = {}
    for user, item, ts in rows:
        by_user.setdefault(user, []).append((float(ts), int(item)))
    split = tiny_sequences.split()
    for u, user in enumerate(tiny_sequences.user_ids):
        items = [item for _, item in sorted(by_user[user])]
        assert items[-1] == split.test_targets[u]
        assert items[-2] == split.valid_targets[u]
        assert items[:-2] == split.train[u].tolist()
        assert items[:-1] == split.test_histories()[u].tolist()


def test_atomic_file_is_replaced_and_names_are_checked(tmp_path, tiny_sequences):
    (tmp_path / "tiny.inter").write_text("old")
    write_atomic_files(tiny_sequences, tmp_path)
    assert (tmp_path / "tiny.inter").read_text().startswith("user_id:token")
    tiny_sequences.name = "bad name/.."
    with pytest.raises(LeanrankError, match="cannot name"):
        write_atomic_files(tiny_sequences, tmp_path)


def _fake_venv(tmp_path, body: str):
    """A stand-in RecBole environment whose python is a shell script."""
    venv = tmp_path / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\n" + body)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (venv / STAMP).write_text(CONSTRAINTS.read_text(encoding="utf-8"))
    return venv


def test_run_sets_the_torch_flag_in_the_subprocess_only(tmp_path, tiny_sequences):
    venv = _fake_venv(tmp_path, 'while [ $# -gt 0 ]; do [ "$1" = --out ] && out="$2"; shift; done\n'
                                'printf \'{"test_users": 3, "flag": "%s"}\' "$TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" > "$out"\n')
    result = run_recbole_peer(tiny_sequences, tmp_path / "work", 10, threads=1, venv=venv)
    assert result == {"test_users": 3, "flag": "1"}
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    assert (tmp_path / "work" / "atomic" / "tiny" / "tiny.inter").is_file()
    assert "--max-train-seconds 10" in (tmp_path / "work" / "recbole.log").read_text()


def test_run_failure_names_the_log(tmp_path, tiny_sequences):
    venv = _fake_venv(tmp_path, "echo 'Traceback: boom' >&2\nexit 3\n")
    with pytest.raises(LeanrankError, match=r"exit code 3\): Traceback: boom; log: .*recbole\.log"):
        run_recbole_peer(tiny_sequences, tmp_path / "work", 10, venv=venv)


def test_run_rejects_a_wrong_user_count(tmp_path, tiny_sequences):
    venv = _fake_venv(tmp_path, 'while [ $# -gt 0 ]; do [ "$1" = --out ] && out="$2"; shift; done\n'
                                'echo \'{"test_users": 2}\' > "$out"\n')
    with pytest.raises(LeanrankError, match="2 test users, the dataset has 3"):
        run_recbole_peer(tiny_sequences, tmp_path / "work", 10, venv=venv)


@pytest.mark.slow
def test_recbole_sasrec_end_to_end(tmp_path):
    if recbole_python() is None:
        pytest.skip("no .venv-recbole (make recbole-venv)")
    rng = random.Random(0)
    seqs = [[f"i{(3 * u + 7 * j + rng.randrange(3)) % 60}" for j in range(rng.randrange(5, 12))]
            for u in range(200)]
    ds = from_sequences(seqs, name="tiny")
    result = run_recbole_peer(ds, tmp_path, max_train_seconds=1, threads=1, epochs=3, timeout=300)
    assert result["test_users"] == result["valid_users"] == 200
    assert result["epochs_done"] >= 1 and result["epoch_cap_reason"] in ("time budget", "epoch cap")
    for metrics in (result, result["valid"], result["recbole_stock"]["test"]):
        for k in (5, 10, 20):
            assert 0 <= metrics[f"hr@{k}"] <= 1 and 0 <= metrics[f"ndcg@{k}"] <= metrics[f"hr@{k}"]
    stock, mine = result["recbole_stock"]["test"], result["recbole_stock"]["test_recomputed"]
    assert all(abs(stock[k] - mine[k]) < 1e-5 for k in mine)  # our ranking code reproduces RecBole's
    assert result["hr@10"] >= mine["hr@10"]  # removing history items can only help the target
    assert result["params"] > 0 and result["size_mb"] == pytest.approx(result["params"] * 4 / 1e6, abs=1e-3)
