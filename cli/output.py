"""One place that turns results and errors into what the CLI prints and its exit code.

Cheap to import (no rich, no pydantic until a table or a progress bar is drawn): every
``stance`` call loads it, and ``stance resolve`` has a start-up budget of 0.3 s.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from registry.errors import NotFound, RegistryError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]

# C0 and C1 controls (but tab and newline), DEL, zero-width and bidirectional overrides.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character shown as U+FFFD: names, and messages a server
    sent, reach the terminal as text, never as escape sequences."""
    return _UNPRINTABLE.sub("\ufffd", text)


# Set by cli.context when a command opens the local registry without a server configured: a
# "not found" there may only mean the user meant a server (STANCE_REGISTRY unset in a fresh shell).
local_hint: list[str] = []


class _LazyConsole:
    """A rich Console made on first use: most commands print JSON or one plain line."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # Tables are for people; when piped, don't squeeze them into 80 columns.
            stream = sys.stderr if self._stderr else sys.stdout
            self._console = Console(
                stderr=self._stderr,
                highlight=False,
                soft_wrap=True,
                width=None if stream.isatty() else 160,
            )
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


stdout: Any = _LazyConsole(stderr=False)
stderr: Any = _LazyConsole(stderr=True)


def to_jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic model, without importing pydantic here
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


def say(line: str) -> None:
    """One plain line on stdout (no markup: names and digests are printed as they are)."""
    sys.stdout.write(line + "\n")


class Transfers:
    """Rich progress bars on stderr for blob uploads and downloads (only on a terminal)."""

    def __init__(self) -> None:
        self._progress: Progress | None = None

    def begin(self, label: str, total: int) -> Callable[[int], None]:
        if not sys.stderr.isatty():
            return lambda _: None
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=stderr._get(),
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
    sys.stderr.write(f"warning: {printable(message)}\n")


def fail(code: str, message: str, *, as_json: bool, stderr_line: bool = True) -> None:
    """Print one ``error:`` line on stderr (and ``{code, message}`` on stdout with --json)."""
    message = " ".join(message.split())
    if as_json:
        sys.stdout.write(json.dumps({"code": code, "message": message}) + "\n")
    if stderr_line:
        sys.stderr.write(f"error: {printable(message)}\n")


@contextmanager
def errors(*, as_json: bool) -> Iterator[None]:
    """Map registry errors to exit 1 and one ``error:`` line (plus ``{code, message}`` as JSON)."""
    try:
        yield
    except RegistryError as exc:
        message = exc.message
        if isinstance(exc, NotFound) and local_hint:
            message = f"{message} ({local_hint[0]})"
        fail(exc.code, message, as_json=as_json)
        raise typer.Exit(1) from None
