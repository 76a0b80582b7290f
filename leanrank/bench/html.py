"""One self-contained HTML page per benchmark report: inline CSS and script, the Pareto plot
embedded as a ``data:`` URI, no external reference of any kind."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from leanrank.bench.plots import pareto_front, pareto_plot
from leanrank.bench.report import _fmt, to_markdown
from leanrank.core.io import write_json, write_text

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
pre { background: #f5f5f5; padding: .6em .8em; overflow-x: auto; white-space: pre-wrap; }
img#pareto { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td:first-child, th:first-child, td.text { text-align: left; }
tr.front td { background: #e6f4e6; font-weight: 600; }
tr.front td:first-child::before { content: "\\25C6  "; color: #2ca02c; }
tr.role-teacher td:first-child { border-left: 4px solid #d4a017; }
tr.role-peer td:first-child { border-left: 4px solid #d62728; }
tr.role-peer td { font-style: italic; }
tr.role-ensemble td:first-child { border-left: 4px solid #9467bd; }
.scroll { overflow-x: auto; }
.muted { color: #666; font-size: .9em; }
.yes { color: #1a7f37; } .no { color: #b42318; }
"""

# Runs before anything else in <body>: records script errors, then on load marks the page when the
# plot decoded (naturalWidth > 0). Headless-browser checks read both attributes from the DOM.
SCRIPT = """
window.onerror = function (message, source, line) {
  var b = document.body, m = String(message) + (line ? " (line " + line + ")" : "");
  b.dataset.errors = b.dataset.errors ? b.dataset.errors + " | " + m : m;
};
window.addEventListener("load", function () {
  var img = document.getElementById("pareto");
  if (img && img.complete && img.naturalWidth > 0) { document.body.dataset.plotOk = "1"; }
});
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _columns(doc: dict) -> list[str]:
    """``doc["columns"]`` (those some row has) or, without it, every row key in first-seen order."""
    rows = doc.get("rows", [])
    if doc.get("columns"):
        return [c for c in doc["columns"] if any(c in r for r in rows)]
    return list(dict.fromkeys(k for r in rows for k in r))


def _rows_table(doc: dict, x: str, y: str) -> str:
    rows = doc.get("rows", [])
    front = {id(r) for r in pareto_front(rows, x, y)}
    cols = _columns(doc)
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        classes = [f"role-{r.get('role', 'variant')}"] + (["front"] if id(r) in front else [])
        cells = "".join(f'<td{" class=text" if isinstance(r.get(c), str) else ""}>{_e(_fmt(r.get(c)))}</td>'
                        for c in cols)
        body.append(f'<tr class="{_e(" ".join(classes))}" data-name="{_e(r.get("name", ""))}"'
                    f'{" data-front=1" if id(r) in front else ""}>{cells}</tr>')
    return (f'<div class="scroll"><table id="rows"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>\n'
            f'<p class="muted">Highlighted rows (&#9670;) are on the Pareto front of {_e(y)} vs {_e(x)} '
            f"(no other row is at least as good on both and better on one).</p>")


def _kv_list(mapping: dict) -> str:
    items = []
    for k, v in mapping.items():
        cls = f' class="{"yes" if v else "no"}"' if isinstance(v, bool) else ""
        items.append(f"<li>{_e(k)}: <span{cls}>{_e(_fmt(v))}</span></li>")
    return "<ul>" + "".join(items) + "</ul>"


def _plot_img(png_path: str | Path | None) -> str:
    if png_path is None:
        return '<p class="muted">(no plot)</p>'
    data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
    return (f'<img id="pareto" alt="Pareto plot" src="data:image/png;base64,{data}" '
            "onerror=\"document.body.dataset.errors = (document.body.dataset.errors || '') + "
            "'plot image failed to decode'\">")


def to_html(doc: dict, png_path: str | Path | None = None, x: str = "pairs_per_s",
            y: str = "ndcg@10") -> str:
    """The report page as a string (see :func:`write_html`)."""
    title = f"{doc.get('dataset', '')} — {doc.get('split', '')} split"
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class=muted>Made by:</p><pre><code>{_e(doc.get('command', ''))}</code></pre>",
             "<h2>Pareto plot</h2>", _plot_img(png_path),
             "<h2>Results</h2>", _rows_table(doc, x, y)]
    if doc.get("bar"):
        parts += ["<h2>Bars</h2>", _kv_list(doc["bar"])]
    if doc.get("notes"):
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in doc["notes"]) + "</ul>"]
    if doc.get("protocol"):
        parts += ["<h2>Protocol</h2>", _kv_list(doc["protocol"])]
    if doc.get("significance"):
        parts += ["<h2>Paired t-test on per-query NDCG@10</h2>", "<ul>" + "".join(
            f"<li>{_e(k)}: mean diff {_e(_fmt(v.get('mean_diff')))}, p = {_e(_fmt(v.get('p_value')))}, "
            f"n = {_e(_fmt(v.get('n')))}</li>" for k, v in doc["significance"].items()) + "</ul>"]
    m = doc.get("machine", {})
    parts += ["<h2>Machine and versions</h2>", _kv_list(m) if m else "",
              "<p>" + _e(", ".join(f"{k} {v}" for k, v in doc.get("versions", {}).items())) + "</p>"]
    if isinstance(doc.get("seconds"), (int, float)):
        parts.append(f"<p class=muted>Run time: {doc['seconds']:.0f} s</p>")
    return ("<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
            '<meta name=viewport content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<script>{SCRIPT}</script>\n" + "\n".join(parts) + "\n</body>\n</html>\n")


def write_html(doc: dict, html_path: str | Path, png_path: str | Path | None = None,
               x: str = "pairs_per_s", y: str = "ndcg@10") -> Path:
    """Write the report as ONE self-contained HTML file (atomically): title, command, the plot at
    ``png_path`` embedded as base64, the rows table (Pareto-front rows of ``y`` vs ``x``
    highlighted), bars, notes, protocol, machine and versions. All text is HTML-escaped."""
    path = Path(html_path)
    write_text(path, to_html(doc, png_path, x, y))
    return path


def write_report(doc: dict, out_dir: str | Path, x: str = "pairs_per_s", y: str = "ndcg@10",
                 size: str = "size_mb", title: str | None = None, stem: str | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``report.md``, ``pareto.png`` and ``report.html`` into ``out_dir``
    (or ``STEM.json``, ``STEM.md``, ``STEM.png``, ``STEM.html`` when ``stem`` is given, the
    names of committed results); returns their paths under the keys ``json``, ``md``, ``png``, ``html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if stem:
        paths = {k: out / f"{stem}.{k}" for k in ("json", "md", "png", "html")}
    else:
        paths = {"json": out / "results.json", "md": out / "report.md", "png": out / "pareto.png",
                 "html": out / "report.html"}
    write_json(paths["json"], doc)
    write_text(paths["md"], to_markdown(doc, paths["json"].name))
    pareto_plot(doc.get("rows", []), paths["png"], x=x, y=y, size=size,
                title=title or f"{doc.get('dataset', '')} {doc.get('split', '')}: {y} vs {x}")
    write_html(doc, paths["html"], paths["png"], x=x, y=y)
    return paths
