"""The click classes behind ``stance``: usage errors as JSON, help without type noise.

Typer builds the command tree from these (``cls=``); nothing else here knows about click.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from cli.output import fail

# click's UsageError (Typer vendors click and exports only this subclass of it by name).
UsageError: type[Exception] = typer.BadParameter.__mro__[1]
USAGE_EXIT = 2


def _plain_flags(command: Any, ctx: Any) -> None:
    """Flags take no value: drop the ``<bool>`` Typer would print beside each (issue 16)."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class StanceCommand(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_flags(self, ctx)
        super().format_help(ctx, formatter)


class StanceGroup(TyperGroup):
    """A group whose usage errors under ``--json`` also print ``{"code": "usage", ...}``."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_flags(self, ctx)
        super().format_help(ctx, formatter)

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            if parent is None:
                _usage_json(exc, "--json" in args)
            raise
        if parent is None:
            ctx.meta["stance.json"] = "--json" in args
        return ctx

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:  # a subcommand's parse, or typer.BadParameter in a body
            if ctx.parent is None:
                _usage_json(exc, ctx.meta.get("stance.json", False))
            raise


def _usage_json(exc: Exception, wants_json: bool) -> None:
    """stdout's JSON document; click still prints its own usage message on stderr."""
    if wants_json:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        fail("usage", message, as_json=True, stderr_line=False)
