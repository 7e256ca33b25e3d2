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
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

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


class Transfers:
    """Rich progress bars on stderr for blob uploads and downloads (only on a terminal)."""

    def __init__(self) -> None:
        self._progress: Progress | None = None

    def begin(self, label: str, total: int) -> Callable[[int], None]:
        if not stderr.is_terminal:
            return lambda _: None
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=stderr,
                transient=True,
            )
            self._progress.start()
        progress, task = self._progress, self._progress.add_task(label, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)
            if progress.finished:
                progress.stop()
                self._progress = None

        return advance


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
