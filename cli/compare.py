"""``stance compare``: 2 to 8 adapters side by side (cosine matrix, per-layer norms, ranks).

Registered in ``cli/main.py`` with ``command(rich_help_panel=COMPARE)(compare)``; imports
nothing heavy until it runs (start-up time, issue 16).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli import context
from cli.output import emit, errors, stdout, warn

if TYPE_CHECKING:
    from registry.lora.compare import Comparison

BARS = " ▁▂▃▄▅▆▇█"


def _bars(values: list[float], peak: float) -> str:
    """A one-line sparkline from 0 to ``peak``: a flat line reads flat."""
    scale = len(BARS) - 1
    return "".join(BARS[min(scale, round(v / peak * scale))] if peak > 0 else " " for v in values)


def print_comparison(result: Comparison) -> None:
    """The cosine matrix, then one row per adapter: norms, layer spread, ranks, curves."""
    from rich.markup import escape
    from rich.table import Table

    n = len(result.specs)
    names = [f"[{i + 1}]" for i in range(n)]
    matrix = Table("", *names, title="cosine of the whole updates (exact)", title_justify="left")
    for i, row in enumerate(result.cosine):
        matrix.add_row(f"[{i + 1}] {escape(result.specs[i])}", *(f"{v:+.3f}" for v in row))
    stdout.print(matrix)
    table = Table(
        "adapter", "r", "||dW||", "CV ||dW||", "CV raw ||A||", "top layers", "rank 90/99%",
        title="per adapter", title_justify="left",
    )  # fmt: skip
    for i, a in enumerate(result.adapters):
        table.add_row(
            f"[{i + 1}] {escape(a.spec)}",
            str(a.r),
            f"{a.total_norm:.4g}",
            f"{a.layer_cv:.3f}",
            f"{a.a_layer_cv:.3f}",
            ", ".join(map(str, a.top_layers)),
            f"{a.rank_90} / {a.rank_99}",
        )
    stdout.print(table)
    curves = Table(
        "adapter", "||dW|| per layer (0 to max)", "raw ||A|| per layer (0 to max)",
        title="per layer, first to last", title_justify="left",
    )  # fmt: skip
    for i, a in enumerate(result.adapters):
        delta, raw = [r.delta_norm for r in a.layers], [r.a_norm for r in a.layers]
        curves.add_row(
            f"[{i + 1}]", _bars(delta, max(delta, default=0.0)), _bars(raw, max(raw, default=0.0))
        )
    stdout.print(curves)


def compare(
    specs: Annotated[list[str], typer.Argument(help="2 to 8 published specs or adapter folders")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON document.")
    ] = False,
) -> None:
    """Compare 2 to 8 adapters: the cosine matrix of their updates, per-layer ||dW|| next to raw
    ||A||, and the rank that keeps 90% / 99% of each update (an existing folder wins over a
    spec of the same name)."""
    with errors(as_json=as_json), context.open_registry() as registry:
        result = registry.compare(specs)
    for message in result.warnings:
        warn(message)
    for adapter in result.adapters:
        for message in adapter.warnings:
            warn(f"{adapter.spec}: {message}")
    emit(result, as_json=as_json, human=lambda: print_comparison(result))
