"""npm's ``SemVer`` (strict) and the lexical pieces its ranges are built from.

The regular expressions are node-semver's ``internal/re.js`` sources, compiled in their
"safe" bounded form with JavaScript's whitespace, digits and end of input.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from registry.errors import InvalidSpec

MAX_LENGTH: Final = 256
MAX_SAFE_INTEGER: Final = 2**53 - 1
MAX_SAFE_BUILD_LENGTH: Final = MAX_LENGTH - 6

# ECMAScript's WhiteSpace and LineTerminator, which are JavaScript's \s and what trim()
# removes; Python's \s and str.strip() differ (\x1c-\x1f and \x85 in, \ufeff out).
JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
JS_SPACE_CHARS = frozenset(
    "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)


def compile_safe(src: str) -> re.Pattern[str]:
    """node-semver's ``safeRe``: bounded repetitions, then JavaScript's classes and ``$``."""
    for token, most in ((r"\s", 1), (r"\d", MAX_LENGTH), ("[a-zA-Z0-9-]", MAX_SAFE_BUILD_LENGTH)):
        src = src.replace(f"{token}*", f"{token}{{0,{most}}}")
        src = src.replace(f"{token}+", f"{token}{{1,{most}}}")
    src = src.replace(r"[v=\s]", f"[v={JS_SPACE}]").replace(r"\s", f"[{JS_SPACE}]")
    # Python's $ also matches before a final newline; JavaScript's only at the end.
    return re.compile(src.replace(r"\d", "[0-9]").replace("$", r"\Z"))


# The sources of node-semver's internal/re.js, strict forms only.
NUMERIC = r"0|[1-9]\d*"
NON_NUMERIC = r"\d*[a-zA-Z-][a-zA-Z0-9-]*"
MAIN = rf"({NUMERIC})\.({NUMERIC})\.({NUMERIC})"
PRE_ID = rf"(?:{NON_NUMERIC}|{NUMERIC})"
PRERELEASE = rf"(?:-({PRE_ID}(?:\.{PRE_ID})*))"
BUILD_SRC = r"(?:\+([a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*))"
FULL_PLAIN = rf"v?{MAIN}{PRERELEASE}?{BUILD_SRC}?"
GTLT = r"((?:<|>)?=?)"
XID = rf"{NUMERIC}|x|X|\*"
XPLAIN = rf"[v=\s]*({XID})(?:\.({XID})(?:\.({XID})(?:{PRERELEASE})?{BUILD_SRC}?)?)?"

_FULL = compile_safe(rf"^{FULL_PLAIN}$")
SPACES = re.compile(f"[{JS_SPACE}]+")
NUMERIC_ID = re.compile(r"[0-9]+")


def trim(text: str) -> str:
    """JavaScript's ``String.prototype.trim``: what npm strips around a range or version."""
    start, end = 0, len(text)
    while start < end and text[start] in JS_SPACE_CHARS:
        start += 1
    while end > start and text[end - 1] in JS_SPACE_CHARS:
        end -= 1
    return text[start:end]


class Invalid(Exception):
    """Why one comparator or version is refused; the range turns it into InvalidSpec."""


Identifier = int | str


def _compare_ids(a: Identifier, b: Identifier) -> int:
    if isinstance(a, int) and isinstance(b, int):
        return (a > b) - (a < b)
    a_num, b_num = bool(NUMERIC_ID.fullmatch(str(a))), bool(NUMERIC_ID.fullmatch(str(b)))
    if a_num and b_num:
        # JavaScript's unary plus: digits past 2**53 compare as doubles, as npm does.
        fa, fb = float(a), float(b)
        return (fa > fb) - (fa < fb)
    if a_num != b_num:
        return -1 if a_num else 1
    sa, sb = str(a), str(b)
    return 0 if sa == sb else -1 if sa < sb else 1


@functools.total_ordering
class Version:
    """A version as npm's ``SemVer`` reads it strictly; ordered by semver precedence."""

    __slots__ = ("build", "major", "minor", "patch", "prerelease", "text")

    def __init__(self, value: str) -> None:
        if len(value) > MAX_LENGTH:
            raise Invalid(f"{quote(value)} is longer than {MAX_LENGTH} characters")
        m = _FULL.search(trim(value))
        if not m:
            raise Invalid(f"{quote(value)} is not a semantic version")
        self.major, self.minor, self.patch = (_component(m[i], what) for i, what in _PARTS)
        self.prerelease: tuple[Identifier, ...] = (
            tuple(map(_pre_id, m[4].split("."))) if m[4] else ()
        )
        self.build: tuple[str, ...] = tuple(m[5].split(".")) if m[5] else ()
        self.text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            self.text += "-" + ".".join(map(str, self.prerelease))

    @classmethod
    def parse(cls, value: str) -> Version:
        """Parse like ``new SemVer(value)``; raises InvalidSpec with the reason."""
        try:
            return cls(value)
        except Invalid as exc:
            raise InvalidSpec(f"invalid version {quote(value)}: {exc}") from None

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Version({self.text!r})"

    def compare(self, other: Version) -> int:
        """-1, 0 or 1 by semver precedence (build metadata ignored), exactly as npm orders."""
        if self.text == other.text:
            return 0
        mine, theirs = (self.major, self.minor, self.patch), (other.major, other.minor, other.patch)
        if mine != theirs:
            return -1 if mine < theirs else 1
        if not self.prerelease or not other.prerelease:
            return (not self.prerelease) - (not other.prerelease)
        for a, b in zip(self.prerelease, other.prerelease, strict=False):
            if a != b or type(a) is not type(b):
                return _compare_ids(a, b)
        return (len(self.prerelease) > len(other.prerelease)) - (
            len(self.prerelease) < len(other.prerelease)
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.compare(other) == 0

    def __lt__(self, other: Version) -> bool:
        return self.compare(other) < 0

    def __hash__(self) -> int:
        return hash((self.major, self.minor, self.patch))


_PARTS = ((1, "major"), (2, "minor"), (3, "patch"))


def _component(digits: str, what: str) -> int:
    number = int(digits)
    if number > MAX_SAFE_INTEGER:
        raise Invalid(f"{what} version {digits} is larger than {MAX_SAFE_INTEGER}")
    return number


def _pre_id(part: str) -> Identifier:
    if NUMERIC_ID.fullmatch(part) and int(part) < MAX_SAFE_INTEGER:
        return int(part)
    return part


def quote(text: str, most: int = 40) -> str:
    """``repr`` of user input for a one-line message, cut short if long."""
    return repr(text) if len(text) <= most else repr(text[:most]) + "..."
