"""The ``leanrank`` command line, run as a subprocess: tables on success, one ``error:`` line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

HD = ('"id","product_uid","product_title","search_term","relevance"\n'
      '2,100001,"Simpson Strong-Tie 12-Gauge Angle","angle bracket",3\n'
      '3,100001,"Simpson Strong-Tie 12-Gauge Angle","l bracket",2.5\n'
      '18,100006,"Whirlpool Microwave in Stainless, Café","microwave",2.67\n'
      '19,100006,"Whirlpool Microwave in Stainless, Café","microwave",2.33\n')


def run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LEANRANK_DATA"}
    env.update({"COLUMNS": "200", "PYTHONWARNINGS": "ignore"}, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "leanrank.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("error:")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "search" / "homedepot"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "train.csv.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train.csv", HD.encode("iso-8859-1"))
    rec = tmp_path / "rec" / "amazon-beauty"
    rec.mkdir(parents=True)
    (rec / "Beauty.txt").write_text("1 10 11 12\n2 11 13\n3 10 14", encoding="utf-8")
    return tmp_path


def test_data_info_prints_tables(data_dir):
    proc = run("data", "info", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "search dataset: synthetic" in out and "search dataset: homedepot" in out
    for word in ("train", "valid", "test", "queries", "products in catalog", "judged products", "pairs"):
        assert word in out
    assert "label distribution" in out and "gain = label - 1" in out and "2.33" in out
    assert "duplicate_pairs_merged_by_mean=1" in out
    assert "Beauty.txt" in out and "amazon-beauty" in out
    assert "Traceback" not in proc.stderr


def test_data_info_without_data_dir_shows_synthetic_and_hint():
    proc = run("data", "info")
    assert proc.returncode == 0, proc.stderr
    assert "search dataset: synthetic" in proc.stdout and "search dataset: homedepot" not in proc.stdout
    assert "--data-dir DIR or set LEANRANK_DATA" in proc.stdout


def test_data_info_missing_data_dir():
    proc = run("data", "info", "--data-dir", "/nonexistent")
    assert_one_line_error(proc)
    assert proc.stderr.strip() == "error: /nonexistent: data folder not found"
    assert proc.stdout == ""  # fails before printing any table


def test_data_download_unknown_name(tmp_path):
    proc = run("data", "download", "nosuch", "--to", str(tmp_path))
    assert_one_line_error(proc)
    assert len(proc.stderr.strip().splitlines()) == 1
    for name in ("amazon-beauty", "amazon-sports", "homedepot", "esci", "wands"):
        assert name in proc.stderr


def test_data_download_homedepot_prints_kaggle_steps(tmp_path):
    proc = run("data", "download", "homedepot", "--to", str(tmp_path))
    assert_one_line_error(proc)
    assert "kaggle competitions download -c home-depot-product-search-relevance" in proc.stderr
    assert str(tmp_path / "search" / "homedepot" / "train.csv.zip") in proc.stderr
    assert not (tmp_path / "search").exists()


def test_data_sources():
    proc = run("data", "sources")
    assert proc.returncode == 0, proc.stderr
    for name in ("amazon-beauty", "amazon-sports", "homedepot", "esci", "wands", "download", "manual"):
        assert name in proc.stdout


def test_importing_leanrank_does_not_import_torch():
    code = ("import io, sys, leanrank, leanrank.cli, leanrank.data.search, leanrank.cli_views\n"
            "print('torch' in sys.modules)\n"
            "from rich.console import Console\n"
            "leanrank.cli_views.print_data_info('synthetic', None, Console(file=io.StringIO()))\n"
            "print('torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
