"""The benchmark report's Pareto front, plot and self-contained HTML page (checked in headless Chromium)."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leanrank.bench.html import write_html, write_report
from leanrank.bench.plots import pareto_front, pareto_plot

EVIL = "<script>alert('x')</script>"


def row(name, x, y, role="variant", size=50.0, **extra):
    return {"name": name, "role": role, "ndcg@10": y, "pairs_per_s": x, "size_mb": size, **extra}


def names(rows):
    return [r["name"] for r in rows]


@pytest.fixture(scope="module")
def doc():
    rows = [row("teacher", 100.0, 0.55, "teacher", 90.0, **{"ndcg@10_ci95": [0.5, 0.6]}),
            row("peer-a", 250.0, 0.54, "peer", 23.5),
            row("ens", 60.0, 0.57, "ensemble", 180.0),
            row("fast", 2000.0, 0.40, size=8.0),
            row("dominated", 90.0, 0.50),
            row(EVIL, 150.0, 0.45, size=30.0),
            {"name": "no-speed", "role": "variant", "ndcg@10": 0.9, "size_mb": 1.0}]
    return {"command": "python -m leanrank.bench.quantize --out x", "dataset": "homedepot", "split": "test",
            "columns": ["name", "role", "ndcg@10", "ndcg@10_ci95", "pairs_per_s", "size_mb", "absent"],
            "rows": rows, "protocol": {"queries": 150}, "bar": {"speedup_required": 2.5, "met": False},
            "notes": ["a note & <b>bold</b>"], "machine": {"cpu": "AMD EPYC", "cpus": 2},
            "versions": {"leanrank": "0.1.0"}, "seconds": 12.3}


@pytest.fixture(scope="module")
def report(doc, tmp_path_factory):
    return write_report(doc, tmp_path_factory.mktemp("report") / "out")


# ---- pareto_front -------------------------------------------------------------------------------

def test_front_excludes_dominated_rows_and_sorts_by_x():
    rows = [row("a", 100, 0.5), row("b", 200, 0.4), row("c", 150, 0.3), row("d", 50, 0.5),
            row("e", 300, 0.1), row("f", 20, 0.6)]
    # c is dominated by b, d by a (same quality, slower)
    assert names(pareto_front(rows)) == ["f", "a", "b", "e"]


def test_front_keeps_exact_ties_but_not_weak_ones():
    rows = [row("a", 100, 0.5), row("twin", 100, 0.5), row("same-x-worse", 100, 0.49),
            row("same-y-slower", 99.9, 0.5)]
    assert names(pareto_front(rows)) == ["a", "twin"]


def test_front_ignores_rows_missing_x_or_y():
    rows = [row("ok", 10, 0.2), {"name": "no-x", "ndcg@10": 0.99}, {"name": "no-y", "pairs_per_s": 1e9},
            row("none", None, 0.9), row("nan", math.nan, 0.9), row("bool", True, 0.9),
            row("text", "fast", 0.9), row("inf", 10, math.inf)]
    assert names(pareto_front(rows)) == ["ok"]
    assert pareto_front([]) == []


def test_front_with_other_keys():
    rows = [{"name": "a", "users_per_s": 10, "hr@10": 0.3}, {"name": "b", "users_per_s": 5, "hr@10": 0.2},
            {"name": "c", "users_per_s": 1, "hr@10": 0.4}]
    assert names(pareto_front(rows, x="users_per_s", y="hr@10")) == ["c", "a"]


# ---- the plot -----------------------------------------------------------------------------------

def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_is_a_sensible_png(report):
    w, h = png_size(report["png"])
    assert 600 <= w <= 3000 and 400 <= h <= 2000
    assert report["png"].stat().st_size > 20_000   # points, labels, legends: not a blank canvas
    assert not [p for p in report["png"].parent.iterdir() if p.name.endswith(".tmp")], "temp file left"


def test_plot_without_plottable_rows_still_writes_a_png(tmp_path):
    rows = [{"name": "beauty-teacher", "role": "teacher", "ndcg@10": 0.05, "size_mb": 3.0}]
    out = pareto_plot(rows, tmp_path / "p.png", x="users_per_s", title="no throughput")
    assert out == tmp_path / "p.png" and png_size(out)[0] > 0


def test_plot_with_other_keys_and_narrow_x_range(tmp_path):
    rows = [{"name": n, "role": r, "users_per_s": x, "hr@10": y, "table_mb": s}
            for n, r, x, y, s in [("a", "teacher", 100, 0.3, 12.0), ("b", "variant", 120, 0.28, 3.0),
                                  ("c", "peer", 150, 0.25, None)]]
    out = pareto_plot(rows, tmp_path / "sub" / "p.png", x="users_per_s", y="hr@10", size="table_mb")
    assert png_size(out)[0] > 0


# ---- the HTML page ------------------------------------------------------------------------------

class Rows(HTMLParser):
    """The <tr> attributes of the rows table's body, and every <img src>."""

    def __init__(self):
        super().__init__()
        self.rows, self.imgs, self.in_body = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.in_body |= tag == "tbody"
        if tag == "tr" and self.in_body:
            self.rows.append(attrs)
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))


def parse(path: Path) -> Rows:
    parser = Rows()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_write_report_writes_all_four_files(report, doc):
    assert {k: p.name for k, p in report.items()} == {"json": "results.json", "md": "report.md",
                                                      "png": "pareto.png", "html": "report.html"}
    assert json.loads(report["json"].read_text()) == doc
    assert report["md"].read_text().startswith("# homedepot — test split")


def test_html_embeds_the_png_and_references_nothing_outside(report):
    text = report["html"].read_text(encoding="utf-8")
    assert base64.b64encode(report["png"].read_bytes()).decode() in text
    assert parse(report["html"]).imgs == ["data:image/png;base64," + base64.b64encode(
        report["png"].read_bytes()).decode()]
    for ref in ("http://", "https://", "//cdn", "<link", " src=\"http", "@import", "url("):
        assert ref not in text.lower(), ref


def test_html_escapes_all_text(report):
    text = report["html"].read_text(encoding="utf-8")
    assert EVIL not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert text.count("<script") == 1   # only the page's own
    assert "a note &amp; &lt;b&gt;bold&lt;/b&gt;" in text


def test_html_marks_front_and_roles(report, doc):
    rows = parse(report["html"]).rows
    assert [r["data-name"] for r in rows] == names(doc["rows"])   # the escaped name round-trips
    front = {r["data-name"] for r in rows if "front" in r["class"].split()}
    assert front == set(names(pareto_front(doc["rows"]))) == {"ens", "teacher", "peer-a", "fast"}
    assert all(("data-front" in r) == (r["data-name"] in front) for r in rows)
    roles = {r["data-name"]: r["class"].split()[0] for r in rows}
    assert roles["teacher"] == "role-teacher" and roles["peer-a"] == "role-peer"
    assert roles["ens"] == "role-ensemble" and roles["dominated"] == "role-variant"


def test_html_columns_and_number_format(tmp_path, doc):
    text = write_html(doc, tmp_path / "a.html").read_text(encoding="utf-8")
    head = re.search(r"<thead>(.*?)</thead>", text).group(1)
    assert re.findall(r"<th>(.*?)</th>", head) == ["name", "role", "ndcg@10", "ndcg@10_ci95",
                                                  "pairs_per_s", "size_mb"]   # "absent" is in no row
    assert "<td>[0.5000, 0.6000]</td>" in text and "<td>2,000.0</td>" in text and "<td>0.5500</td>" in text
    assert "(no plot)" in text and 'id="pareto"' not in text
    no_columns = {k: v for k, v in doc.items() if k != "columns"}
    text = write_html(no_columns, tmp_path / "b.html").read_text(encoding="utf-8")
    head = re.search(r"<thead>(.*?)</thead>", text).group(1)
    assert re.findall(r"<th>(.*?)</th>", head) == ["name", "role", "ndcg@10", "pairs_per_s", "size_mb",
                                                  "ndcg@10_ci95"]


def test_import_stays_cheap():
    code = ("import sys, leanrank, leanrank.bench.html, leanrank.bench.plots; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at module level'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- headless Chromium --------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def body_attrs(html_path: Path, tmp_path: Path) -> str:
    """The attributes of <body> in the DOM headless Chromium builds from ``html_path``."""
    if not Path(CHROMIUM).exists():
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
           "--dump-dom", html_path.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body, f"no <body> in the dumped DOM: {done.stdout[:500]!r}"
    return body.group(1)


def test_chromium_renders_the_plot_without_errors(report, tmp_path):
    attrs = body_attrs(report["html"], tmp_path)
    assert 'data-plot-ok="1"' in attrs
    assert "data-errors" not in attrs


@pytest.mark.parametrize("payload", [b"definitely not a PNG", b""], ids=["corrupt", "empty"])
def test_chromium_check_fails_on_a_broken_image(report, tmp_path, payload):
    png = tmp_path / "broken.png"
    png.write_bytes(payload)
    attrs = body_attrs(write_html(json.loads(report["json"].read_text()), tmp_path / "r.html", png), tmp_path)
    assert "data-plot-ok" not in attrs
    assert "plot image failed to decode" in attrs


def test_chromium_check_records_script_errors(report, tmp_path):
    page = tmp_path / "r.html"
    page.write_text(report["html"].read_text(encoding="utf-8").replace(
        "</body>", "<script>notDefinedAnywhere();</script></body>"), encoding="utf-8")
    attrs = body_attrs(page, tmp_path)
    assert 'data-plot-ok="1"' in attrs   # the plot is fine; the error is recorded all the same
    assert "data-errors" in attrs and "notDefinedAnywhere" in attrs
