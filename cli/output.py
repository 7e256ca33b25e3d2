"""One place that turns results and errors into what the CLI prints and its exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console

from registry.errors import RegistryError

# Tables are for people; when piped, don't squeeze them into 80 columns.
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    return value


def emit(value: Any, *, as_json: bool, human: Callable[[], None]) -> None:
    """Print exactly one JSON document with ``--json``, else the human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=False) + "\n")
    else:
        human()


def warn(message: str) -> None:
    stderr.print(f"warning: {message}", markup=False)


@contextmanager
def errors(*, as_json: bool) -> Iterator[None]:
    """Map registry errors to exit 1 and one ``error:`` line (plus ``{code, message}`` as JSON)."""
    try:
        yield
    except RegistryError as exc:
        message = " ".join(exc.message.split())
        if as_json:
            sys.stdout.write(json.dumps({"code": exc.code, "message": message}) + "\n")
        stderr.print(f"error: {message}", markup=False)
        raise typer.Exit(1) from None
