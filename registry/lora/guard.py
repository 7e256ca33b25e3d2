"""The one place where an unexpected exception during inspection becomes ``InvalidAdapter``.

Adapter files are hostile input: whatever a parser, numpy or RE2 raises on them (a
``RecursionError``, an ``OverflowError``, an ``OSError`` from a file that vanished) is a refusal
of that adapter, never a 500. The public entry points of ``lora/`` wear ``@refusing``; inner
code still raises ``InvalidAdapter`` with a precise message wherever it knows what is wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from registry.errors import InvalidAdapter

P = ParamSpec("P")
T = TypeVar("T")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it nests too deeply to read"
    if isinstance(exc, MemoryError):
        return "reading it ran out of memory"
    if isinstance(exc, OSError):
        return f"a file cannot be read ({exc.strerror or type(exc).__name__})"
    detail = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def refusing(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn``, raising ``InvalidAdapter`` (chained) in place of any other ``Exception``."""

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except InvalidAdapter:
            raise
        except Exception as exc:
            raise InvalidAdapter(f"malformed adapter: {_reason(exc)}") from exc

    return guarded
