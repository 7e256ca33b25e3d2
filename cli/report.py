"""Human renderings (rich tables and a text heat map); JSON output never passes through here.

Names, reasons, base model ids and tensor names are the publisher's text (or a hostile
server's): every table cell and header is shown as plain text, never read as rich markup, with
control characters (terminal escapes, bidi overrides) replaced, so nothing printed can restyle
or rewrite the terminal.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.filesize import decimal
from rich.table import Table as RichTable
from rich.text import Text

from cli.output import printable, stdout, warn

if TYPE_CHECKING:  # for the signatures only: the catalog (SQLAlchemy) and numpy stay unloaded
    from registry.catalog.tokens import TokenInfo
    from registry.lora.compare import Diff
    from registry.schemas import (
        AdapterDetail,
        AdapterSummary,
        AliasMove,
        AuditEntry,
        Page,
        SimilarAdapter,
        VersionDetail,
    )

SHADES = "·░▒▓█"  # one per fifth of the largest cell; the legend under the map says so


def plain(value: object) -> Text:
    """``value`` as literal text: no markup, every control character shown as U+FFFD."""
    return Text(printable(str(value)))


class Table(RichTable):
    """rich's Table with every str header and cell shown as ``plain`` text."""

    def add_column(self, header: RenderableType = "", *args: Any, **kwargs: Any) -> None:
        super().add_column(plain(header) if isinstance(header, str) else header, *args, **kwargs)

    def add_row(self, *renderables: RenderableType | None, **kwargs: Any) -> None:
        cells = [plain(cell) if isinstance(cell, str) else cell for cell in renderables]
        super().add_row(*cells, **kwargs)


def _decimals(peak: float) -> int:
    """Fixed decimals giving the largest value 3 significant digits: columns align on the point."""
    if peak <= 0 or not math.isfinite(peak):
        return 3
    return max(0, 2 - math.floor(math.log10(peak)))


def shade(value: float, peak: float) -> str:
    """The shade of ``value``: one step per fifth of ``peak`` (the legend's bins)."""
    fraction = value / peak if peak > 0 else 0.0
    return SHADES[min(len(SHADES) - 1, max(0, int(fraction * len(SHADES))))]


def heat_map(fingerprint: dict[str, Any]) -> Group:
    """Layer x module table of ||dW||_F, shaded relative to the largest module update."""
    modules = fingerprint["modules"]
    columns = sorted({m["module"] for m in modules})
    layers = sorted({m["layer"] for m in modules if m["layer"] is not None})
    cells = {(m["layer"], m["module"]): m["delta_norm"] for m in modules}
    peak = max(cells.values(), default=0.0)
    totals = {str(k): v for k, v in fingerprint["layers"].items()}  # JSON keys are strings
    places = _decimals(peak)
    total_places = _decimals(max(totals.values(), default=0.0))
    step = 100 // len(SHADES)
    legend = "  ".join(
        f"{s * 2} {i * step}-{(i + 1) * step}%" if i < len(SHADES) - 1 else f"{s * 2} >={i * step}%"
        for i, s in enumerate(SHADES)
    )
    table = Table(title="||dW||_F by layer and module", title_justify="left")
    table.add_column("layer", justify="right")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("layer total", justify="right")
    for layer in layers:
        row = []
        for column in columns:
            value = cells.get((layer, column))
            row.append("" if value is None else f"{shade(value, peak) * 2} {value:.{places}f}")
        table.add_row(str(layer), *row, f"{totals.get(str(layer), 0.0):.{total_places}f}")
    return Group(table, Text(f"{legend} of the largest cell ({peak:.{places}f})"))


def print_info(info: dict[str, Any], *, title: str) -> None:
    summary = Table(title=title, show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    fp = info["fingerprint"]
    rows = {
        "base model": info["base_model"] or "(not recorded)",
        "type": info["peft_type"]
        + (" + DoRA" if info["use_dora"] else "")
        + (" (rsLoRA)" if info["use_rslora"] else ""),
        "rank / alpha / scaling": f"{info['r']} / {info['lora_alpha']:g} / {info['scaling']:.4g}",
        "targets": ", ".join(info["target_modules"]),
        "layers": f"{len(info['layers'])} ({info['layers'][0]}-{info['layers'][-1]})"
        if info["layers"]
        else "-",
        "dtype / parameters / size": f"{info['dtype']} / {info['parameters']:,} / "
        f"{decimal(info['bytes'])}",
        "total ||dW||_F": f"{fp['total_norm']:.4g}",
        "layer CV": f"{fp['layer_cv']:.3f}",
        "top layers": ", ".join(str(x) for x in fp["top_layers"]),
        "projection balance": ", ".join(
            f"{k} {v:.0%}" for k, v in fp["projection_balance"].items()
        ),
    }
    for key, value in rows.items():
        summary.add_row(key, value)
    stdout.print(summary)
    stdout.print(heat_map(fp))


def print_version(detail: VersionDetail) -> None:
    print_info(detail.info, title=f"{detail.namespace}/{detail.name}@{detail.version}")
    files = Table("file", "size", "digest", title="files", title_justify="left")
    for f in detail.files:
        files.add_row(f.path, decimal(f.size), f.digest)
    stdout.print(files)
    stdout.print(plain(f"digest {detail.digest}  aliases {', '.join(detail.aliases) or '-'}"))
    stdout.print(f'pin: {detail.name} = "{detail.version}"', markup=False)
    if detail.hub_repo:
        stdout.print(plain(f"on the Hub: {detail.hub_repo} at {detail.hub_revision}"))


def print_search(page: Page[AdapterSummary]) -> None:
    table = Table("adapter", "latest", "base model", "r", "targets", "versions", "updated")
    for a in page.items:
        table.add_row(
            f"{a.namespace}/{a.name}",
            a.latest or "-",
            a.base_model or "-",
            str(a.r or "-"),
            ",".join(a.target_modules),
            str(a.versions),
            f"{a.updated_at:%Y-%m-%d}",
        )
    stdout.print(table)
    if page.next_cursor:
        stdout.print(plain(f"more: --cursor {page.next_cursor}"))


def print_versions(detail: AdapterDetail) -> None:
    aliases: dict[str, list[str]] = {}
    for a in detail.aliases:
        aliases.setdefault(a.version, []).append(a.name)
    table = Table(
        "version",
        "digest",
        "aliases",
        "published",
        "by",
        "status",
        title=f"{detail.namespace}/{detail.name}",
        title_justify="left",
    )
    for v in detail.versions:
        tags = aliases.get(v.version, []) + (["latest"] if v.version == detail.latest else [])
        status = (
            f"yanked: {v.yanked_reason or ''}"
            if v.yanked
            else ("prerelease" if v.prerelease else "")
        )
        table.add_row(
            v.version,
            v.digest[:19],
            ",".join(tags),
            f"{v.created_at:%Y-%m-%d %H:%M}",
            v.published_by,
            status,
        )
    stdout.print(table)
    if not detail.versions:
        warn("no versions")


def print_diff(result: Diff, *, top: int | None = None) -> None:
    """The cosine, then the modules in layer order: all, or the ``top`` that weigh most in it."""
    stdout.print(f"cosine({result.x}, {result.y}) = {result.cosine:+.4f}", markup=False)
    modules = result.modules
    title = "per module"
    if top is not None and len(modules) > top:
        # A module's share of the total cosine scales with ||dW_x|| ||dW_y||: show the heaviest.
        modules = sorted(modules, key=lambda m: m.norm_x * m.norm_y, reverse=True)[:top]
        title = f"the {top} of {len(result.modules)} modules that weigh most (--all: every one)"
    modules = sorted(modules, key=lambda m: (m.layer is None, m.layer or 0, m.module, m.path))
    table = Table(title=title)
    for header in ("layer", "module", "cosine", "||dW|| x", "||dW|| y"):
        table.add_column(header, justify="left" if header == "module" else "right")
    for m in modules:
        layer = "-" if m.layer is None else str(m.layer)
        table.add_row(layer, m.module, f"{m.cosine:+.3f}", f"{m.norm_x:.3g}", f"{m.norm_y:.3g}")
    stdout.print(table)
    for side, paths in (("x", result.only_in_x), ("y", result.only_in_y)):
        if paths:
            stdout.print(plain(f"only in {side}: {', '.join(paths)}"))


def print_similar(found: list[SimilarAdapter], *, left_out: int = 0, below: float = 0.0) -> None:
    table = Table("adapter", "version", "cosine", "sketch estimate")
    for s in found:
        table.add_row(
            f"{s.namespace}/{s.name}", s.version, f"{s.cosine:+.4f}", f"{s.sketch_cosine:+.3f}"
        )
    if found:
        stdout.print(table)
    else:
        stdout.print("no adapter on the same base model points the same way", markup=False)
    if left_out:
        stdout.print(
            f"{left_out} more with |cosine| < {below:g} left out: orthogonal updates share no "
            "direction (--min-cosine 0 lists them)",
            markup=False,
        )


def print_alias_history(moves: list[AliasMove]) -> None:
    table = Table("when", "alias", "from", "to", "by")
    for m in moves:
        table.add_row(
            f"{m.at:%Y-%m-%d %H:%M:%S}",
            m.alias,
            m.from_version or "-",
            m.to_version or "(removed)",
            m.actor,
        )
    stdout.print(table)


def print_audit(entries: list[AuditEntry]) -> None:
    table = Table("id", "when", "actor", "action", "target", "outcome")
    for e in entries:
        table.add_row(
            str(e.id), f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.target, e.outcome
        )
    stdout.print(table)


def print_tokens(found: list[TokenInfo]) -> None:
    table = Table(
        "id", "scope", "namespaces", "description", "created", "expires", "last used", "revoked"
    )
    day = "%Y-%m-%d"
    for t in found:
        table.add_row(
            t.id,
            t.scope,
            ",".join(t.namespaces) or "(all)",
            t.description or "",
            f"{t.created_at:{day}}",
            f"{t.expires_at:{day}}" if t.expires_at else "-",
            f"{t.last_used_at:{day} %H:%M}" if t.last_used_at else "-",
            f"{t.revoked_at:{day}}" if t.revoked_at else "",
        )
    stdout.print(table)
