"""PEFT's pattern rules in time linear in the input: rank/alpha_pattern keys and modules_to_save.

PEFT (``peft.utils.other.get_pattern_key``) gives a module the value of the first key, in the
config's order, for which ``re.match(rf"(.*\\.)?({key})$", module_path)`` succeeds. Keys and
paths both come from the uploader, and Python's backtracking ``re`` runs ``(x+x+)+y`` on a
27-character path for seconds while holding the GIL. Here each key is checked once per config
and compiled into RE2 sets (``google-re2``): linear-time automata, the same syntax as ``re``
for everything but backreferences and lookarounds, which RE2 cannot run and we refuse.

Equivalence with PEFT: ``(.*\\.)?(K)$`` matches ``p`` exactly when ``K`` matches the whole of
``p`` or of a suffix after a dot (a dot, like the start, is a non-word character, so ``\\b``
agrees); keys that look at the start (``^``, ``\\A``) are matched with PEFT's own wrapper
instead, and ``re``'s ``\\Z`` is spelled ``\\z`` for RE2. Where ``re`` and RE2 read the same
text differently the key is refused: counts like ``{,3}`` or ``{01}``, anything ``re`` warns
about (``[[:alpha:]]``), a key that does not compile alone or wrapped. ``\\w \\d \\s \\b``
and ``(?i)`` are Unicode-aware in ``re`` and ASCII in RE2, so a non-ASCII module path under
such keys is refused. ``$`` before a final newline is moot: paths hold no control characters.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import re2

from registry.errors import InvalidAdapter

MAX_KEYS = 1000
MAX_KEY_CHARS = 512
_MAX_MEM = 16 << 20  # per RE2 set: its program and its DFA cache
_COUNT = re.compile(r"\{[0-9,]*\}")
_SAME_COUNT = re.compile(r"\{(?:0|[1-9][0-9]*)(?:,(?:0|[1-9][0-9]*)?)?\}")
_UNICODE_AWARE = re.compile(r"\\[wWdDsSbB]|\(\?[a-zA-Z]*i")


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _MAX_MEM
    return options


def _scan(key: str, field: str) -> tuple[bool, str]:
    """Whether ``key`` holds ``^`` or ``\\A`` outside a class, and the key in RE2's spelling.

    ``re``'s ``\\Z`` (end of text) is RE2's ``\\z``; counts RE2 reads apart are refused.
    """
    i, n, in_class, starts = 0, len(key), False, False
    out: list[str] = []
    while i < n:
        c = key[i]
        if c == "\\":
            escaped = key[i + 1 : i + 2]
            starts = starts or (not in_class and escaped == "A")
            out.append("\\z" if escaped == "Z" and not in_class else key[i : i + 2])
            i += 2
            continue
        start = i
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 2 if key[i + 1 : i + 2] == "^" else 1
            if key[i : i + 1] == "]":
                i += 1  # a "]" first in a class is a literal
            out.append(key[start:i])
            continue
        elif c == "^":
            starts = True
        elif c == "{":
            count = _COUNT.match(key, i)
            if count and not _SAME_COUNT.fullmatch(count.group()):
                raise InvalidAdapter(
                    f"{field} key {key!r}: the count {count.group()} means one thing to Python's "
                    "re and another to RE2; write it as {m}, {m,} or {m,n}"
                )
        out.append(c)
        i += 1
    return starts, "".join(out)


def _check_python(key: str, field: str) -> None:
    """The key compiles alone and inside PEFT's wrapper, with no warning (``re`` then agrees)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # re.UNICODE (the default for str patterns) keeps these out of re's cache entries
            # for the same pattern compiled elsewhere, whose warning would not fire again.
            re.compile(key, re.UNICODE)
            re.compile(rf"(.*\.)?({key})$", re.UNICODE)
    except (re.error, Warning, RecursionError, OverflowError, ValueError) as exc:
        raise InvalidAdapter(f"{field} key {key!r} is not a valid pattern ({exc})") from None


class PatternTable:
    """The keys of one ``rank_pattern`` or ``alpha_pattern``, compiled once; see the module doc."""

    def __init__(self, patterns: Mapping[str, Any], *, field: str) -> None:
        if len(patterns) > MAX_KEYS:
            raise InvalidAdapter(f"{field} has {len(patterns)} keys; at most {MAX_KEYS} are read")
        self.field = field
        self.values = list(patterns.values())
        self._suffix = re2.Set.FullMatchSet(_options())
        self._start = re2.Set.MatchSet(_options())
        self._suffix_order: list[int] = []
        self._start_order: list[int] = []
        self._ascii_only = False
        for order, key in enumerate(patterns):
            self._add(order, key)
        # A pattern every text matches: a result without it means RE2 gave up (out of memory).
        self._suffix_sentinel = self._suffix.Add("(?s:.*)")
        self._start_sentinel = self._start.Add("")
        try:
            self._suffix.Compile()
            self._start.Compile()
        except re2.error:
            raise InvalidAdapter(f"{field}: its keys are too large to compile together") from None

    def _add(self, order: int, key: object) -> None:
        field = self.field
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise InvalidAdapter(f"{field} keys must be patterns of 1 to {MAX_KEY_CHARS} chars")
        if not (key.isascii() and key.isprintable()):
            raise InvalidAdapter(f"{field} key {key!r} must be printable ASCII")
        starts, spelled = _scan(key, field)
        _check_python(key, field)
        self._ascii_only = self._ascii_only or bool(_UNICODE_AWARE.search(key))
        try:
            if starts:
                self._start.Add(rf"(.*\.)?({spelled})$")
                self._start_order.append(order)
            else:
                self._suffix.Add(f"(?:{spelled})")
                self._suffix_order.append(order)
        except re2.error:
            raise InvalidAdapter(
                f"{field} key {key!r} is not a pattern RE2 runs (backreferences, lookarounds, "
                "atomic groups, possessive or over-1000 repeats are refused)"
            ) from None

    def _hits(self, found: list[int] | None, sentinel: int, order: list[int]) -> Iterable[int]:
        if not found or sentinel not in found:
            raise InvalidAdapter(f"{self.field}: its keys are too complex to match in bounded time")
        return (order[i] for i in found if i != sentinel)

    def first(self, path: str) -> int | None:
        """The index of the first key (in config order) that PEFT would match to ``path``."""
        if not self.values:
            return None
        if self._ascii_only and not path.isascii():
            raise InvalidAdapter(
                f"{self.field}: module {path} is not ASCII, and its keys use \\w, \\d, \\s, \\b or "
                "(?i), which Python and RE2 read differently outside ASCII"
            )
        best: int | None = None
        if self._suffix_order:
            start = 0
            while True:
                found = self._suffix.Match(path[start:])
                for hit in self._hits(found, self._suffix_sentinel, self._suffix_order):
                    best = hit if best is None else min(best, hit)
                dot = path.find(".", start)
                if dot < 0 or best == 0:
                    break
                start = dot + 1
        if self._start_order:
            found = self._start.Match(path)
            for hit in self._hits(found, self._start_sentinel, self._start_order):
                best = hit if best is None else min(best, hit)
        return best

    def value(self, path: str, default: Any) -> Any:
        index = self.first(path)
        return default if index is None else self.values[index]


@functools.lru_cache(maxsize=4)
def _cached(items: tuple[tuple[str, Any], ...], field: str) -> PatternTable:
    return PatternTable(dict(items), field=field)


def table(patterns: Mapping[str, Any], *, field: str) -> PatternTable:
    """A compiled table for ``patterns``, shared by calls with the same keys and values."""
    return _cached(tuple(patterns.items()), field)


class SavedModules:
    """``modules_to_save``: a tensor belongs to one when ``.name.`` occurs in ``.tensor``.

    One RE2 set of the literal names scans each tensor name once, so 4,000 names against
    20,000 tensors costs 20,000 scans, not 80 million substring tests.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._set = re2.Set.SearchSet(_options())
        self._empty = True
        for name in names:
            self._set.Add(re2.escape(f".{name}."))
            self._empty = False
        self._sentinel = self._set.Add("")
        try:
            self._set.Compile()
        except re2.error:
            raise InvalidAdapter("modules_to_save is too large to compile") from None

    def covers(self, tensor: str) -> bool:
        if self._empty:
            return False
        found = self._set.Match(f".{tensor}")
        if not found or self._sentinel not in found:
            raise InvalidAdapter("modules_to_save is too complex to match in bounded time")
        return len(found) > 1
