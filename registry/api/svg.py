"""Inline SVG charts for the version page: the fingerprint heat map and the energy curves."""

from __future__ import annotations

from html import escape
from typing import Any

CELL_W, CELL_H, LEFT, TOP = 56, 14, 44, 22


def _shade(fraction: float) -> str:
    # White to deep blue; perceptually ordered, readable in print.
    t = max(0.0, min(1.0, fraction))
    r, g, b = (int(247 - t * (247 - 8)), int(251 - t * (251 - 48)), int(255 - t * (255 - 107)))
    return f"rgb({r},{g},{b})"


def heat_map(fingerprint: dict[str, Any]) -> str:
    """Layer (rows) x module (columns) grid of ||dW||_F, shaded relative to the largest cell."""
    modules = fingerprint["modules"]
    columns = sorted({m["module"] for m in modules})
    layers = sorted({m["layer"] for m in modules if m["layer"] is not None})
    cells = {(m["layer"], m["module"]): m["delta_norm"] for m in modules}
    peak = max(cells.values(), default=0.0) or 1.0
    width, height = LEFT + CELL_W * len(columns) + 8, TOP + CELL_H * len(layers) + 8
    parts = [
        f'<svg class="heatmap" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
        "<title>||dW||_F by layer and module</title>"
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
                f' fill="{_shade(value / peak)}" data-layer="{layer}"'
                f' data-module="{escape(column)}"'
                f' data-norm="{value:.6g}"><title>layer {layer} {escape(column)}: '
                f"||dW||_F = {value:.4g}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def energy_chart(fingerprint: dict[str, Any], width: int = 360, height: int = 200) -> str:
    """Mean energy captured at ranks 1..r per module type, with the 90% line: minimum rank."""
    by_type: dict[str, list[list[float]]] = {}
    for m in fingerprint["modules"]:
        by_type.setdefault(m["module"], []).append(m["energy"])
    left, bottom, top, right = 36, height - 24, 10, width - 10
    rank = max((len(e) for curves in by_type.values() for e in curves), default=1)

    def x(k: int) -> float:
        return left + (right - left) * (k - 1) / max(rank - 1, 1)

    def y(v: float) -> float:
        return bottom - (bottom - top) * v

    parts = [
        f'<svg class="spectrum" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        "<title>energy captured at rank k</title>",
        f'<line x1="{left}" y1="{y(0.9)}" x2="{right}" y2="{y(0.9)}" stroke="#999" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{left - 4}" y="{y(0.9) + 4}" text-anchor="end" font-size="10">90%</text>',
        f'<text x="{left - 4}" y="{y(1.0) + 4}" text-anchor="end" font-size="10">1</text>',
        f'<text x="{left - 4}" y="{y(0.0)}" text-anchor="end" font-size="10">0</text>',
        f'<text x="{(left + right) / 2}" y="{height - 4}" text-anchor="middle" font-size="10">'
        f"rank k (1..{rank})</text>",
    ]
    palette = ["#0b4f9c", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f8c8d"]
    for index, (module, curves) in enumerate(sorted(by_type.items())):
        length = min(len(c) for c in curves)
        mean = [sum(c[k] for c in curves) / len(curves) for k in range(length)]
        points = " ".join(f"{x(k + 1):.1f},{y(v):.1f}" for k, v in enumerate(mean))
        color = palette[index % len(palette)]
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"'
            f' data-module="{escape(module)}"><title>{escape(module)}</title></polyline>'
        )
        parts.append(
            f'<text x="{right - 4}" y="{top + 12 + 12 * index}" text-anchor="end" '
            f'font-size="10" fill="{color}">{escape(module)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
