"""Inline SVG charts for the pages: the fingerprint heat map, the energy curves, the diff grid.

Colours come from perceptual scales (viridis for magnitudes, ColorBrewer's RdBu for cosines),
each drawn with a legend; every cell carries its value in a ``<title>`` (the hover text).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

CELL_W, CELL_H, LEFT, TOP = 56, 14, 44, 22
LEGEND_W, LEGEND_GAP = 12, 28

# matplotlib's viridis at t = 0, 1/8, ..., 1: dark to light, ordered for the eye and in grey.
VIRIDIS = (
    (68, 1, 84),
    (71, 45, 123),
    (59, 82, 139),
    (44, 114, 142),
    (33, 145, 140),
    (40, 174, 128),
    (94, 201, 98),
    (173, 220, 48),
    (253, 231, 37),
)
# ColorBrewer RdBu from -1 to +1 (red: opposite directions, blue: the same direction).
RDBU = (
    (178, 24, 43),
    (214, 96, 77),
    (244, 165, 130),
    (253, 219, 199),
    (247, 247, 247),
    (209, 229, 240),
    (146, 197, 222),
    (67, 147, 195),
    (33, 102, 172),
)

Scale = Callable[[float], str]


def _ramp(anchors: tuple[tuple[int, int, int], ...], t: float) -> str:
    """Linear interpolation between evenly spaced anchor colours, ``t`` in [0, 1]."""
    t = max(0.0, min(1.0, t)) * (len(anchors) - 1)
    i = min(int(t), len(anchors) - 2)
    f = t - i
    r, g, b = (round(a + (z - a) * f) for a, z in zip(anchors[i], anchors[i + 1], strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def viridis(t: float) -> str:
    return _ramp(VIRIDIS, t)


def diverging(cosine: float) -> str:
    return _ramp(RDBU, (cosine + 1) / 2)


def _legend(
    x: float,
    y: float,
    height: float,
    ticks: Iterable[tuple[float, str]],
    ident: str,
    color: Callable[[float], str],
) -> str:
    """A vertical colour bar from t=1 (top) to t=0 (bottom), with labelled ticks at ``t``."""
    stops = "".join(
        f'<stop offset="{k / 16:.4f}" stop-color="{color(1 - k / 16)}"/>' for k in range(17)
    )
    parts = [
        f'<g class="legend"><defs><linearGradient id="{ident}" x1="0" y1="0" x2="0" y2="1">'
        f"{stops}</linearGradient></defs>",
        f'<rect x="{x}" y="{y}" width="{LEGEND_W}" height="{height}" fill="url(#{ident})"'
        ' stroke="#667" stroke-width="0.5"/>',
    ]
    for t, label in ticks:
        ty = y + height * (1 - t)
        parts.append(
            f'<line x1="{x + LEGEND_W}" y1="{ty:.1f}" x2="{x + LEGEND_W + 3}" y2="{ty:.1f}"'
            ' stroke="#667"/>'
            f'<text x="{x + LEGEND_W + 5}" y="{ty + 3.5:.1f}" font-size="10">{escape(label)}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _grid(
    cells: dict[tuple[int, str], float],
    *,
    css: str,
    title: str,
    color: Scale,
    hover: Callable[[int, str, float], str],
    legend: Callable[[float, float, float], str],
) -> str:
    """Layer (rows) x module (columns) rectangles, plus the legend to the right."""
    columns = sorted({module for _, module in cells})
    layers = sorted({layer for layer, _ in cells})
    grid_w = LEFT + CELL_W * len(columns)
    height = max(TOP + CELL_H * len(layers) + 8, 150)
    width = grid_w + LEGEND_GAP + LEGEND_W + 60
    parts = [
        f'<svg class="{css}" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
    ]
    for j, column in enumerate(columns):
        x = LEFT + j * CELL_W + CELL_W / 2
        parts.append(
            f'<text x="{x}" y="14" text-anchor="middle" font-size="11">{escape(column)}</text>'
        )
    for i, layer in enumerate(layers):
        y = TOP + i * CELL_H
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 11}" text-anchor="end" font-size="10">{layer}</text>'
        )
        for j, column in enumerate(columns):
            value = cells.get((layer, column))
            if value is None:
                continue
            parts.append(
                f'<rect x="{LEFT + j * CELL_W}" y="{y}" width="{CELL_W - 1}" height="{CELL_H - 1}"'
                f' fill="{color(value)}" data-layer="{layer}" data-module="{escape(column)}"'
                f' data-value="{value:.6g}"><title>{escape(hover(layer, column, value))}</title>'
                "</rect>"
            )
    legend_h = min(120.0, height - TOP - 8)
    parts.append(legend(grid_w + LEGEND_GAP, TOP, legend_h))
    parts.append("</svg>")
    return "".join(parts)


def heat_map(fingerprint: dict[str, Any]) -> str:
    """||dW||_F per layer and module on viridis from 0 to the largest cell, with its legend.

    The scale starts at 0, not at the smallest cell: norms are magnitudes, and stretching
    3.28-3.30 over the whole scale would draw the flat-norm artefact as structure.
    """
    cells = {
        (m["layer"], m["module"]): m["delta_norm"]
        for m in fingerprint["modules"]
        if m["layer"] is not None
    }
    peak = max(cells.values(), default=0.0) or 1.0

    def legend(x: float, y: float, h: float) -> str:
        ticks = [(t, f"{t * peak:.3g}") for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
        return _legend(x, y, h, ticks, "heat-scale", viridis)

    return _grid(
        cells,
        css="heatmap",
        title="||dW||_F by layer and module",
        color=lambda v: viridis(v / peak),
        hover=lambda layer, module, v: f"layer {layer} {module}: ||dW||_F = {v:.4g}",
        legend=legend,
    )


def cosine_map(modules: list[dict[str, Any]]) -> str:
    """The cosine of two updates per layer and module, on a diverging scale from -1 to +1."""
    cells = {(m["layer"], m["module"]): m["cosine"] for m in modules if m["layer"] is not None}

    def legend(x: float, y: float, h: float) -> str:
        ticks = [((c + 1) / 2, f"{c:+g}" if c else "0") for c in (-1.0, -0.5, 0.0, 0.5, 1.0)]
        return _legend(x, y, h, ticks, "cosine-scale", lambda t: diverging(2 * t - 1))

    return _grid(
        cells,
        css="cosinemap",
        title="cosine of the two updates by layer and module",
        color=diverging,
        hover=lambda layer, module, v: f"layer {layer} {module}: cosine {v:+.4f}",
        legend=legend,
    )


PALETTE = ("#0b4f9c", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f8c8d")


def energy_chart(fingerprint: dict[str, Any], width: int = 440, height: int = 220) -> str:
    """Mean energy captured at ranks 1..r per module type, with the 90% line: minimum rank.

    Axes carry ticks; the legend sits right of the plot, clear of the curves.
    """
    by_type: dict[str, list[list[float]]] = {}
    for m in fingerprint["modules"]:
        by_type.setdefault(m["module"], []).append(m["energy"])
    left, bottom, top, right = 44, height - 34, 10, width - 110
    rank = max((len(e) for curves in by_type.values() for e in curves), default=1)

    def x(k: float) -> float:
        return left + (right - left) * (k - 1) / max(rank - 1, 1)

    def y(v: float) -> float:
        return bottom - (bottom - top) * v

    parts = [
        f'<svg class="spectrum" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        "<title>energy captured at rank k</title>",
        f'<g class="axes" stroke="#667"><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>'
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/></g>',
    ]
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<g class="ytick"><line x1="{left - 4}" y1="{y(v)}" x2="{right}" y2="{y(v)}"'
            f' stroke="#e3e6ea"/><text x="{left - 6}" y="{y(v) + 3.5}" text-anchor="end"'
            f' font-size="10">{v:.0%}</text></g>'
        )
    step = max(1, (rank + 7) // 8)  # at most ~8 labels on the rank axis
    for k in range(1, rank + 1):
        labelled = k == 1 or k == rank or (k - 1) % step == 0
        parts.append(
            f'<g class="xtick"><line x1="{x(k)}" y1="{bottom}" x2="{x(k)}" y2="{bottom + 4}"'
            ' stroke="#667"/>'
            + (
                f'<text x="{x(k)}" y="{bottom + 15}" text-anchor="middle" font-size="10">{k}</text>'
                if labelled
                else ""
            )
            + "</g>"
        )
    parts += [
        f'<line x1="{left}" y1="{y(0.9)}" x2="{right}" y2="{y(0.9)}" stroke="#999" '
        'stroke-dasharray="4 3"><title>90% of the update energy</title></line>',
        f'<text x="{right + 4}" y="{y(0.9) + 3.5}" font-size="10" fill="#667">90%</text>',
        f'<text x="{(left + right) / 2}" y="{height - 4}" text-anchor="middle" font-size="10">'
        "rank k</text>",
    ]
    for index, (module, curves) in enumerate(sorted(by_type.items())):
        length = min(len(c) for c in curves)
        mean = [sum(c[k] for c in curves) / len(curves) for k in range(length)]
        points = " ".join(f"{x(k + 1):.1f},{y(v):.1f}" for k, v in enumerate(mean))
        color = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"'
            f' data-module="{escape(module)}"><title>{escape(module)}</title></polyline>'
        )
        ly = top + 30 + 14 * index
        parts.append(
            f'<g class="key"><line x1="{right + 30}" y1="{ly - 3.5}" x2="{right + 46}"'
            f' y2="{ly - 3.5}" stroke="{color}" stroke-width="2"/><text x="{right + 50}"'
            f' y="{ly}" font-size="10">{escape(module)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def cosine_matrix(labels: list[str], cosine: list[list[float]]) -> str:
    """The N x N cosines of whole updates, each cell on the diverging scale with its value."""
    n, cell = len(labels), 64
    reach = 6.2 * max((len(label) for label in labels), default=1)  # ~px of an 11px label
    left, top = reach + 14, 0.65 * reach + 24  # the column labels run up at 40 degrees
    width = left + cell * n + max(LEGEND_GAP + LEGEND_W + 40, 0.77 * reach - cell / 2)
    height = max(top + cell * n + 8, 200)
    parts = [
        f'<svg class="cosine-matrix" role="img" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        "<title>cosine of the updates, every pair</title>"
    ]
    for i, label in enumerate(labels):
        cx, cy = left + i * cell + cell / 2, top + i * cell + cell / 2
        parts.append(
            f'<text x="{left - 6}" y="{cy + 4}" text-anchor="end" font-size="11">'
            f"{escape(label)}</text>"
            f'<text x="{cx}" y="{top - 6}" font-size="11" transform="rotate(-40 {cx} {top - 6})">'
            f"{escape(label)}</text>"
        )
    for i, row in enumerate(cosine):
        for j, value in enumerate(row):
            x, y = left + j * cell, top + i * cell
            ink = "#fff" if abs(value) > 0.6 else "#1b1f24"
            parts.append(
                f'<g class="cell" data-row="{i}" data-col="{j}" data-value="{value:.6g}">'
                f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}"'
                f' fill="{diverging(value)}"><title>{escape(labels[i])} vs {escape(labels[j])}:'
                f" cosine {value:+.4f}</title></rect>"
                f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2 + 3}" text-anchor="middle"'
                f' font-size="12" fill="{ink}">{value:+.2f}</text></g>'
            )
    ticks = [((c + 1) / 2, f"{c:+g}") for c in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    legend_x = left + cell * n + LEGEND_GAP
    scale = min(120.0, cell * n)
    parts.append(
        _legend(legend_x, top, scale, ticks, "matrix-scale", lambda t: diverging(2 * t - 1))
    )
    parts.append("</svg>")
    return "".join(parts)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 times a power of ten) covering lo..hi."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def line_chart(
    series: list[tuple[str, list[tuple[float, float]]]],
    *,
    css: str,
    title: str,
    x_label: str,
    y_label: str,
    from_zero: bool = True,
    width: int = 480,
    height: int = 240,
) -> str:
    """Several (x, y) curves overlaid, their keys below; the y axis starts at 0 by default.

    From zero, as ``heat_map``'s scale: a norm that varies by 1% then looks flat, as it is.
    """
    left, bottom, top, right = 52, height - 34, 12, width - 12
    total_height = height + 14 * len(series) + 4
    xs = [x for _, points in series for x, _ in points] or [0.0, 1.0]
    ys = [y for _, points in series for _, y in points] or [0.0, 1.0]
    y_ticks = nice_ticks(0.0 if from_zero else min(ys), max(ys))
    x_ticks = nice_ticks(min(xs), max(xs), count=8)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1.0

    def sx(v: float) -> float:
        return left + (right - left) * (v - x_lo) / (x_hi - x_lo)

    def sy(v: float) -> float:
        return bottom - (bottom - top) * (v - y_lo) / (y_hi - y_lo)

    parts = [
        f'<svg class="{escape(css)}" role="img" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{total_height}" viewBox="0 0 {width} {total_height}">'
        f"<title>{escape(title)}</title>",
        f'<g class="axes" stroke="#667"><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>'
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/></g>',
    ]
    for v in y_ticks:
        parts.append(
            f'<g class="ytick"><line x1="{left - 4}" y1="{sy(v):.1f}" x2="{right}" '
            f'y2="{sy(v):.1f}" stroke="#e3e6ea"/><text x="{left - 6}" y="{sy(v) + 3.5:.1f}" '
            f'text-anchor="end" font-size="10">{v:.3g}</text></g>'
        )
    for v in (t for t in x_ticks if x_lo <= t <= x_hi):
        parts.append(
            f'<text class="xtick" x="{sx(v):.1f}" y="{bottom + 15}" text-anchor="middle" '
            f'font-size="10">{v:.3g}</text>'
        )
    parts.append(
        f'<text x="{(left + right) / 2}" y="{height - 4}" text-anchor="middle" font-size="10">'
        f"{escape(x_label)}</text>"
        f'<text x="12" y="{(top + bottom) / 2}" text-anchor="middle" font-size="10" '
        f'transform="rotate(-90 12 {(top + bottom) / 2})">{escape(y_label)}</text>'
    )
    for index, (label, points) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"'
            f' data-series="{escape(label)}"><title>{escape(label)}</title></polyline>'
        )
        ly = height + 10 + 14 * index
        parts.append(
            f'<g class="key"><line x1="{left}" y1="{ly - 3.5}" x2="{left + 16}"'
            f' y2="{ly - 3.5}" stroke="{color}" stroke-width="2"/><text x="{left + 20}"'
            f' y="{ly}" font-size="10">{escape(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
