"""``stance gc``: delete blobs that no version references, after a grace period.

Registered in ``cli/main.py`` with ``app.command()(gc)``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from cli.context import embedded_registry
from cli.output import emit, errors, stdout

if TYPE_CHECKING:
    from registry.catalog.gc import Collection

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``2d`` or plain seconds, for options people type."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 30m, 1h or 2d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


def _print(result: Collection) -> None:
    from rich.filesize import decimal
    from rich.table import Table

    verb = "would free" if result.dry_run else "freed"
    if result.blobs:
        table = Table("digest", "bytes", "last modified")
        for blob in result.blobs:
            table.add_row(blob.digest, str(blob.size), f"{blob.modified:%Y-%m-%d %H:%M:%S}")
        stdout.print(table)
    stdout.print(
        f"{verb} {result.count} blob(s), {decimal(result.bytes)} in {result.store}"
        f"; {result.catalog_rows} catalog row(s), {result.leftover_uploads} leftover upload(s)"
    )


def gc(
    grace: Annotated[
        str,
        typer.Option(help="Keep unreferenced blobs younger than this (90s, 30m, 1h, 2d)"),
    ] = "1h",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what would be freed")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON document.")
    ] = False,
) -> None:
    """Delete blobs that no version references, once older than the grace period."""
    period = parse_duration(grace)
    with errors(as_json=as_json), embedded_registry("gc") as registry:
        result = registry.collect_garbage(grace=period, dry_run=dry_run)
    emit(result, as_json=as_json, human=lambda: _print(result))
