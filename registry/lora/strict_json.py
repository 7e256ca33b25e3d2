"""JSON read the way serde_json (safetensors' parser) reads it, with bounded depth and numbers.

Python's ``json`` is lenient where the Rust side is not: it takes ``NaN``/``Infinity``, keeps
the last of duplicate keys (so the shadowed entry is never checked), decodes lone surrogate
escapes into strings that later fail to encode, reads ``-0`` as ``0``, builds integers of any
size (and raises past 4,300 digits) and recurses until ``RecursionError``. Each is refused here,
so what ``lora/`` accepts, safetensors and PEFT can load too.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any

from registry.errors import InvalidAdapter

if TYPE_CHECKING:
    import numpy as np

MAX_DEPTH = 64
# 2**64 has 20 digits: nothing in a header or an adapter config is larger.
MAX_INT_DIGITS = 20
_QUOTE, _COMMA = ord('"'), ord(",")
_BLOCK = 1 << 20
# A surrogate can only come from an escape such as \ud800: without one, no string needs a look.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@functools.cache
def _steps() -> np.ndarray:
    """+1 for an opening bracket, -1 for a closing one, by byte value."""
    import numpy as np

    steps = np.zeros(256, dtype=np.int8)
    steps[[ord("["), ord("{")]] = 1
    steps[[ord("]"), ord("}")]] = -1
    return steps


def _shape(data: bytes) -> tuple[int, int]:
    """The deepest nesting of brackets outside strings, and how many values (at least) the
    text holds (brackets and commas outside strings): one vectorised pass, nothing parsed."""
    # numpy is imported on first use, not with the module: a remote resolve needs no parsing.
    import numpy as np

    # Escapes occur only inside strings: once they are gone, quotes delimit exactly the strings.
    plain = np.frombuffer(data.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    quotes = depth = deepest = values = 0
    for start in range(0, len(plain), _BLOCK):
        block = plain[start : start + _BLOCK]
        is_quote = block == _QUOTE
        outside = ((np.cumsum(is_quote, dtype=np.int64) + quotes) & 1) == 0
        steps = np.where(outside, _steps()[block], 0)
        levels = np.cumsum(steps, dtype=np.int64) + depth
        deepest = max(deepest, int(levels.max()))
        values += int(np.count_nonzero(outside & ((steps > 0) | (block == _COMMA))))
        quotes += int(is_quote.sum())
        depth = int(levels[-1])
    return deepest, values


def _check_strings(value: Any, what: str) -> None:
    """Refuse lone surrogates (``"\\ud800"``): valid JSON to Python, refused by serde_json."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings = [item]
        elif isinstance(item, dict):
            strings = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for s in strings:
            if not s.isascii():
                try:
                    s.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidAdapter(f"{what} holds a lone surrogate escape") from None


def loads(data: bytes, *, what: str, max_values: int = 1 << 20) -> Any:
    """Parse ``data`` as strict JSON; ``what`` names the file in the one-line error.

    ``max_values`` bounds the objects Python would build (a 16 MiB header of ``[]`` is six
    million lists, hundreds of MiB) before any is built.

    Raises:
        InvalidAdapter: not UTF-8, not JSON, or JSON that serde_json or this registry refuses.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidAdapter(f"{what} is not valid UTF-8 JSON") from None
    deepest, values = _shape(data)
    if deepest > MAX_DEPTH:
        raise InvalidAdapter(f"{what} nests JSON deeper than {MAX_DEPTH} levels")
    if values > max_values:
        raise InvalidAdapter(f"{what} holds more than {max_values} JSON values")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, item in items:
            if key in found:
                raise InvalidAdapter(f"{what} has the key {key[:80]!r} twice")
            found[key] = item
        return found

    def constant(name: str) -> Any:
        raise InvalidAdapter(f"{what} holds {name}, which is not JSON")

    def integer(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise InvalidAdapter(f"{what} holds an integer of more than {MAX_INT_DIGITS} digits")
        if digits == "-0":
            raise InvalidAdapter(f"{what} holds -0, which safetensors does not read as an integer")
        return int(digits)

    def number(digits: str) -> float:
        value = float(digits)
        if value in (float("inf"), float("-inf")):
            raise InvalidAdapter(f"{what} holds {digits[:40]}, out of the range of a float")
        return value

    try:
        value = json.loads(
            text,
            object_pairs_hook=pairs,
            parse_constant=constant,
            parse_int=integer,
            parse_float=number,
        )
    except json.JSONDecodeError as exc:
        raise InvalidAdapter(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if _SURROGATE_ESCAPE.search(data):
        _check_strings(value, what)
    return value
