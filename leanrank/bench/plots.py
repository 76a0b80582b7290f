"""The benchmark report's Pareto plot: quality vs throughput, point area ∝ model size.

matplotlib is imported inside :func:`pareto_plot` only, so ``import leanrank`` stays cheap.
"""

from __future__ import annotations

import math
from pathlib import Path

from leanrank.core.io import atomic_path

# role → (marker, colour, legend label); unknown roles fall back to "variant"
ROLE_STYLE = {
    "teacher": ("*", "#d4a017", "teacher"),
    "peer": ("X", "#d62728", "peer (other library)"),
    "ensemble": ("D", "#9467bd", "ensemble"),
    "variant": ("o", "#1f77b4", "variant"),
    "baseline": ("s", "#7f7f7f", "baseline"),
    "ablation": ("v", "#17becf", "ablation"),
    "published": ("P", "#8c564b", "published"),
}
MAX_AREA = 450.0   # pt² of the largest model's point
MIN_AREA = 14.0    # floor, so a tiny model stays visible
NO_SIZE_AREA = 40.0


def _num(value) -> float | None:
    """``value`` as a finite float, or None (bools, strings, NaN and missing values are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pareto_front(rows: list[dict], x: str = "pairs_per_s", y: str = "ndcg@10") -> list[dict]:
    """The rows no other row dominates (higher ``x`` and higher ``y`` are both better).

    A row is dominated when another is at least as good on both and strictly better on one, so
    rows with identical (x, y) are all kept. Rows lacking a numeric ``x`` or ``y`` are ignored.
    Returned sorted by ``x`` ascending (so ``y`` descending): the order to draw the front in.
    """
    points = [(r, _num(r.get(x)), _num(r.get(y))) for r in rows]
    points = [(r, px, py) for r, px, py in points if px is not None and py is not None]
    front = [(r, px, py) for r, px, py in points
             if not any(qx >= px and qy >= py and (qx > px or qy > py) for _, qx, qy in points)]
    front.sort(key=lambda p: (p[1], -p[2]))
    return [r for r, _, _ in front]


def _areas(sizes: list[float | None]) -> tuple[list[float], float]:
    """Marker areas ∝ size (the largest gets MAX_AREA) and the pt²-per-MB scale."""
    known = [s for s in sizes if s is not None and s > 0]
    scale = MAX_AREA / max(known) if known else 0.0
    return [max(s * scale, MIN_AREA) if s is not None and s > 0 else NO_SIZE_AREA for s in sizes], scale


def _size_ticks(sizes: list[float]) -> list[float]:
    """Up to three round reference sizes spanning ``sizes`` (two significant figures)."""
    lo, hi = min(sizes), max(sizes)
    picks = [lo, math.sqrt(lo * hi) if lo > 0 else (lo + hi) / 2, hi]
    return sorted({float(f"{v:.2g}") for v in picks if v > 0})


def _tick(v: float, _pos=None) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def _place_labels(fig, ax, points: list[tuple[str, float, float, float]]) -> None:
    """Label each (name, x, y, area) point, trying offsets around it and keeping the first whose
    text box overlaps no earlier label, no marker and stays inside the axes (else the least bad)."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    axes_box = ax.get_window_extent(renderer)
    centres = ax.transData.transform([(px, py) for _, px, py, _ in points]) if points else []
    markers = [Bbox.from_bounds(cx - r, cy - r, 2 * r, 2 * r)
               for (cx, cy), r in ((c, math.sqrt(p[3]) / 2 * px_per_pt) for c, p in zip(centres, points))]
    placed: list = []

    def cost(box) -> float:
        total = sum(_overlap(box, other) for other in placed + markers)
        inside = _overlap(box, axes_box)
        return total + 4.0 * (box.width * box.height - inside)

    for (name, px, py, area) in points:
        r = math.sqrt(area) / 2 + 2
        ann = ax.annotate(name, (px, py), xytext=(0, 0), textcoords="offset points", fontsize=6.5, zorder=5,
                          bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.6})
        best = None
        for k in (1.0, 2.2, 3.6):
            for dx, dy, ha, va in ((r, r / 2, "left", "bottom"), (r, -r / 2, "left", "top"),
                                   (-r, r / 2, "right", "bottom"), (-r, -r / 2, "right", "top"),
                                   (0, r, "center", "bottom"), (0, -r, "center", "top")):
                ann.xyann = (dx * k, dy * k)
                ann.set_horizontalalignment(ha)
                ann.set_verticalalignment(va)
                box = ann.get_window_extent(renderer)
                c = cost(box)
                if best is None or c < best[0]:
                    best = (c, (dx * k, dy * k), ha, va, box)
                if c == 0:
                    break
            if best[0] == 0:
                break
        _, best_xy, ha, va, box = best
        ann.xyann = best_xy
        ann.set_horizontalalignment(ha)
        ann.set_verticalalignment(va)
        placed.append(box)


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def pareto_plot(rows: list[dict], path: str | Path, x: str = "pairs_per_s", y: str = "ndcg@10",
                size: str = "size_mb", title: str | None = None) -> Path:
    """Scatter ``y`` vs ``x`` for every row that has both, written as a PNG atomically.

    Point area ∝ ``size`` (with a size legend), marker and colour by role (teacher a star, peers
    an X, ensembles a diamond), every point labelled with its name, the Pareto front as a step
    line, ``{y}_ci95`` as error bars when present, log-scale x when x spans more than 10×.
    With no plottable row the PNG says so instead of failing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(9.5, 5.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.1, 0.66, 0.8))
    ax.set_title(title or f"{y} vs {x}", fontsize=10)
    ax.set_xlabel(f"{x}  (higher is better →)")
    ax.set_ylabel(f"{y}  (higher is better →)")
    ax.grid(alpha=0.3, which="both")

    pts = [(r, _num(r.get(x)), _num(r.get(y))) for r in rows]
    pts = [(r, px, py) for r, px, py in pts if px is not None and py is not None]
    if not pts:
        ax.text(0.5, 0.5, f"no rows with both {x} and {y}", ha="center", va="center",
                transform=ax.transAxes, fontsize=11, color="#555555")
        return _save(fig, path)

    sizes = [_num(r.get(size)) for r, _, _ in pts]
    areas, scale = _areas(sizes)
    xs = [px for _, px, _ in pts]
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_tick))
        if max(xs) / min(xs) < 100:   # label 2× and 5× minor ticks only when there is room
            ax.xaxis.set_minor_formatter(FuncFormatter(
                lambda v, _: _tick(v) if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))

    front = pareto_front([r for r, _, _ in pts], x, y)
    ax.step([_num(r[x]) for r in front], [_num(r[y]) for r in front], where="pre",
            color="#2ca02c", lw=1.3, alpha=0.9, zorder=4.5)
    front_ids = {id(r) for r in front}

    roles_seen: list[str] = []
    for (r, px, py), area in zip(pts, areas):
        role = r.get("role") if r.get("role") in ROLE_STYLE else "variant"
        marker, colour, _ = ROLE_STYLE[role]
        if role not in roles_seen:
            roles_seen.append(role)
        # variants below the rest, and small points above large ones, so none is hidden
        z = 3 + (role != "variant") + 1 / (1 + area)
        ax.scatter([px], [py], s=area, marker=marker, c=colour, alpha=0.7 if role == "variant" else 0.9,
                   edgecolors="black", linewidths=0.6, zorder=z)
        if id(r) in front_ids:
            ax.scatter([px], [py], s=area * 1.7, marker=marker, facecolors="none", edgecolors="#2ca02c",
                       linewidths=1.2, zorder=z)

    ax.margins(0.12)
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())   # freeze the limits before measuring label boxes
    ax.set_ylim(ax.get_ylim())
    for (r, px, _) in pts:   # after the limits: they follow the points, not the intervals
        ci = r.get(f"{y}_ci95")
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(v) is not None for v in ci):
            ax.plot([px, px], [ci[0], ci[1]], color="#cccccc", lw=0.7, zorder=1)

    _place_labels(fig, ax, [(str(r.get("name", "?")), px, py, a) for (r, px, py), a in zip(pts, areas)])

    role_handles = [Line2D([], [], ls="", marker=ROLE_STYLE[k][0], color=ROLE_STYLE[k][1], markersize=9,
                           markeredgecolor="black", markeredgewidth=0.6, label=ROLE_STYLE[k][2])
                    for k in roles_seen]
    role_handles.append(Line2D([], [], color="#2ca02c", lw=1.3, marker="o", markerfacecolor="none",
                               markersize=9, label="Pareto front"))
    roles_legend = ax.legend(handles=role_handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                             fontsize=8, title="role", title_fontsize=8, frameon=False)
    ax.add_artist(roles_legend)
    known = [s for s in sizes if s is not None and s > 0]
    if known:
        size_handles = [ax.scatter([], [], s=max(v * scale, MIN_AREA), marker="o", c="#cccccc",
                                   edgecolors="black", linewidths=0.6, label=f"{v:g} MB")
                        for v in _size_ticks(known)]
        if len(known) < len(sizes):
            size_handles.append(ax.scatter([], [], s=NO_SIZE_AREA, marker="o", c="white", edgecolors="black",
                                           linewidths=0.6, label="size unknown"))
        ax.legend(handles=size_handles, loc="upper left", bbox_to_anchor=(1.02, 0.45), fontsize=8,
                  title=f"{size} (area)", title_fontsize=8, frameon=False, labelspacing=1.6,
                  borderpad=1.0)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
