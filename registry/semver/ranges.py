"""npm's ranges: node-semver's ``Range`` and ``Comparator``, rewrite for rewrite."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

from registry.errors import InvalidSpec
from registry.semver.versions import (
    BUILD_SRC,
    FULL_PLAIN,
    GTLT,
    SPACES,
    XPLAIN,
    Invalid,
    Version,
    compile_safe,
    quote,
    trim,
)
from registry.semver.whitespace import trim_comparator_whitespace

_BUILD = compile_safe(BUILD_SRC)
_BUILD_STRIP = re.compile(BUILD_SRC)  # node strips build metadata with the unbounded form
_XRANGE = compile_safe(rf"^{GTLT}\s*{XPLAIN}$")
_TILDE_TRIM = compile_safe(r"(\s*)(?:~>?)\s+")
_TILDE = compile_safe(rf"^(?:~>?){XPLAIN}$")
_CARET_TRIM = compile_safe(r"(\s*)(?:\^)\s+")
_CARET = compile_safe(rf"^(?:\^){XPLAIN}$")
_COMPARATOR = compile_safe(rf"^{GTLT}\s*({FULL_PLAIN})$|^$")
_HYPHEN = compile_safe(rf"^\s*({XPLAIN})\s+-\s+({XPLAIN})\s*$")
_STAR = compile_safe(r"(<|>)?=?\s*\*")
_GTE0 = compile_safe(r"^\s*>=\s*0\.0\.0\s*$")

_NULL_SET = "<0.0.0-0"


class Comparator:
    """One ``<op><version>``, or the empty comparator that admits anything."""

    __slots__ = ("operator", "semver", "value")

    def __init__(self, comp: str) -> None:
        comp = " ".join(SPACES.split(trim(comp)))
        m = _COMPARATOR.search(comp)
        if not m:
            raise Invalid(f"{quote(comp)} is not a comparator")
        self.operator = "" if m[1] in (None, "=") else m[1]
        self.semver = Version(m[2]) if m[2] else None
        self.value = "" if self.semver is None else self.operator + self.semver.text

    def test(self, version: Version) -> bool:
        if self.semver is None:
            return True
        order = version.compare(self.semver)
        return _OPERATORS[self.operator](order)


_OPERATORS: dict[str, Callable[[int], bool]] = {
    "": lambda c: c == 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def _is_x(part: str | None) -> bool:
    return not part or part.lower() == "x" or part == "*"


def _hyphen_replace(m: re.Match[str]) -> str:
    """``1.2 - 3.4.5`` -> ``>=1.2.0 <=3.4.5``; ``1.2.3 - 3.4`` -> ``>=1.2.3 <3.5.0-0``."""
    low, fmaj, fmin, fpat, fpre, _, high, tmaj, tmin, tpat, tpre, _ = m.groups()
    if _is_x(fmaj):
        low = ""
    elif _is_x(fmin):
        low = f">={fmaj}.0.0"
    elif _is_x(fpat):
        low = f">={fmaj}.{fmin}.0"
    else:
        low = f">={low}"
    if _is_x(tmaj):
        high = ""
    elif _is_x(tmin):
        high = f"<{int(tmaj) + 1}.0.0-0"
    elif _is_x(tpat):
        high = f"<{tmaj}.{int(tmin) + 1}.0-0"
    elif tpre:
        high = f"<={tmaj}.{tmin}.{tpat}-{tpre}"
    else:
        high = f"<={high}"
    return trim(f"{low} {high}")


def _tilde(m: re.Match[str]) -> str:
    """``~1.2.3`` -> ``>=1.2.3 <1.3.0-0``; ``~1`` -> ``>=1.0.0 <2.0.0-0``; ``~x`` -> any."""
    major, minor, patch, pre = m[1], m[2], m[3], m[4]
    if _is_x(major):
        return ""
    if _is_x(minor):
        return f">={major}.0.0 <{int(major) + 1}.0.0-0"
    if _is_x(patch):
        return f">={major}.{minor}.0 <{major}.{int(minor) + 1}.0-0"
    low = f">={major}.{minor}.{patch}-{pre}" if pre else f">={major}.{minor}.{patch}"
    return f"{low} <{major}.{int(minor) + 1}.0-0"


def _caret(m: re.Match[str]) -> str:
    """``^1.2.3`` -> ``>=1.2.3 <2.0.0-0``; ``^0.1`` -> ``>=0.1.0 <0.2.0-0``; ``^0.0.1`` likewise."""
    major, minor, patch, pre = m[1], m[2], m[3], m[4]
    if _is_x(major):
        return ""
    if _is_x(minor):
        return f">={major}.0.0 <{int(major) + 1}.0.0-0"
    if _is_x(patch):
        if major == "0":
            return f">={major}.{minor}.0 <{major}.{int(minor) + 1}.0-0"
        return f">={major}.{minor}.0 <{int(major) + 1}.0.0-0"
    low = f">={major}.{minor}.{patch}-{pre}" if pre else f">={major}.{minor}.{patch}"
    if major != "0":
        return f"{low} <{int(major) + 1}.0.0-0"
    if minor != "0":
        return f"{low} <{major}.{int(minor) + 1}.0-0"
    return f"{low} <{major}.{minor}.{int(patch) + 1}-0"


def _xrange(m: re.Match[str]) -> str:
    """``1.2.x`` -> ``>=1.2.0 <1.3.0-0``; ``>1`` -> ``>=2.0.0``; ``<=1.2`` -> ``<1.3.0-0``."""
    gtlt, major, minor, patch = m[1], m[2], m[3], m[4]
    if (_is_x(major) and not _is_x(minor)) or (_is_x(minor) and patch and not _is_x(patch)):
        return m.string
    xmaj = _is_x(major)
    xmin = xmaj or _is_x(minor)
    any_x = xmin or _is_x(patch)
    if gtlt == "=" and any_x:
        gtlt = ""
    if xmaj:
        return _NULL_SET if gtlt in (">", "<") else "*"
    if gtlt and any_x:
        new_major, new_minor = int(major), 0 if xmin else int(minor)
        if gtlt == ">":
            gtlt = ">="
            new_major, new_minor = (new_major + 1, 0) if xmin else (new_major, new_minor + 1)
        elif gtlt == "<=":
            gtlt = "<"
            new_major, new_minor = (new_major + 1, 0) if xmin else (new_major, new_minor + 1)
        return f"{gtlt}{new_major}.{new_minor}.0{'-0' if gtlt == '<' else ''}"
    if xmin:
        return f">={major}.0.0 <{int(major) + 1}.0.0-0"
    if any_x:
        return f">={major}.{minor}.0 <{major}.{int(minor) + 1}.0-0"
    return m[0]


def _each_word(comp: str, rewrite: Callable[[str], str]) -> str:
    return " ".join(rewrite(word) for word in SPACES.split(comp))


def _comparator_words(comp: str) -> str:
    """node's ``parseComparator``: carets, tildes, x-ranges, then stars, one word at a time."""
    comp = _BUILD.sub("", comp, count=1)
    comp = _each_word(trim(comp), lambda c: _CARET.sub(_caret, c, count=1))
    comp = _each_word(trim(comp), lambda c: _TILDE.sub(_tilde, c, count=1))
    comp = _each_word(comp, lambda c: _XRANGE.sub(_xrange, trim(c), count=1))
    return _STAR.sub("", trim(comp), count=1)


def _parse_set(part: str) -> tuple[Comparator, ...]:
    """One ``||`` alternative as node's ``parseRange`` turns it into comparators."""
    part = _BUILD_STRIP.sub("", part)
    part = _HYPHEN.sub(_hyphen_replace, part, count=1)
    part = trim_comparator_whitespace(part)
    part = _TILDE_TRIM.sub(r"\1~", part)
    part = _CARET_TRIM.sub(r"\1^", part)
    words = " ".join(_comparator_words(comp) for comp in part.split(" "))
    comparators = [Comparator(_GTE0.sub("", trim(w), count=1)) for w in SPACES.split(words)]
    unique: dict[str, Comparator] = {}
    for comp in comparators:
        if comp.value == _NULL_SET:
            return (comp,)
        unique[comp.value] = comp
    if len(unique) > 1:
        unique.pop("", None)
    return tuple(unique.values())


def _test_set(comparators: tuple[Comparator, ...], version: Version) -> bool:
    if not all(comp.test(version) for comp in comparators):
        return False
    if not version.prerelease:
        return True
    # npm's prerelease rule: a prerelease passes only if some comparator names a prerelease
    # of the same major.minor.patch (``>=1.2.3-pr.1 <2`` admits 1.2.3-pr.2, never 1.2.4-a).
    return any(
        comp.semver is not None
        and comp.semver.prerelease
        and (comp.semver.major, comp.semver.minor, comp.semver.patch)
        == (version.major, version.minor, version.patch)
        for comp in comparators
    )


Alternatives = tuple[tuple[Comparator, ...], ...]


def _parse(text: str) -> Alternatives:
    raw = SPACES.sub(" ", trim(text))
    sets = [s for s in (_parse_set(trim(part)) for part in raw.split("||")) if s]
    if len(sets) > 1:
        first = sets[0]
        sets = [s for s in sets if s[0].value != _NULL_SET] or [first]
        if len(sets) > 1:
            # A lone ``*`` alternative makes the whole range ``*`` (and so admits no prerelease).
            sets = next(([s] for s in sets if len(s) == 1 and s[0].value == ""), sets)
    return tuple(sets)


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> Alternatives | str:
    """Resolving is the hot path: a range is parsed once, and so is a refusal (its reason)."""
    try:
        return _parse(text)
    except Invalid as exc:
        return str(exc)


class Range:
    """An npm range (``^1.2``, ``>=1.0 <2``, ``1.x || 2.0.0-rc.1``, ``1.0 - 2``)."""

    __slots__ = ("alternatives", "raw")

    def __init__(self, text: str) -> None:
        """Raises InvalidSpec, saying which part is wrong, for anything npm calls invalid."""
        self.raw = text
        parsed = _parsed(text)
        if isinstance(parsed, str):
            raise InvalidSpec(f"invalid range {quote(trim(text))}: {_culprit(text, parsed)}")
        self.alternatives = parsed

    def test(self, version: Version | str) -> bool:
        """npm's ``satisfies``: a string that is not a version satisfies nothing."""
        if isinstance(version, str):
            try:
                version = Version(version)
            except Invalid:
                return False
        return any(_test_set(alt, version) for alt in self.alternatives)

    def max_satisfying(self, versions: Iterable[str]) -> str | None:
        """npm's ``maxSatisfying``: the highest match, the first of equals, as given."""
        best: str | None = None
        best_version: Version | None = None
        for text in versions:
            if self.test(text) and (best_version is None or best_version < Version(text)):
                best, best_version = text, Version(text)
        return best


def is_valid_range(text: str) -> bool:
    """Whether npm's ``validRange`` accepts ``text``."""
    return not isinstance(_parsed(text), str)


def range_error(text: str) -> str | None:
    """What is wrong with ``text`` as an npm range, in one line; None if nothing is."""
    parsed = _parsed(text)
    return _culprit(text, parsed) if isinstance(parsed, str) else None


def satisfies(version: str, text: str) -> bool:
    """npm's ``satisfies(version, range)``: False for an invalid range or version."""
    return is_valid_range(text) and Range(text).test(version)


def max_satisfying(versions: Iterable[str], text: str) -> str | None:
    """npm's ``maxSatisfying``: None for an invalid range."""
    return Range(text).max_satisfying(versions) if is_valid_range(text) else None


_HYPHEN_HINT = "a hyphen range is two plain versions or x-ranges (1.2.3 - 2.x)"


def _culprit(text: str, reason: str) -> str:
    """Name the word the user wrote that is wrong, not node's rewrite of it."""
    for part in SPACES.sub(" ", trim(text)).split("||"):
        if not isinstance(_parsed(part), str):
            continue
        if _HYPHEN.search(trim(part)):  # a hyphen range whose bounds npm refuses (=1.2 - 2)
            return f"{quote(trim(part))}: {_HYPHEN_HINT}, without operators"
        part = _CARET_TRIM.sub(r"\1^", _TILDE_TRIM.sub(r"\1~", trim_comparator_whitespace(part)))
        for word in trim(part).split(" "):
            if word == "-":
                return f"'-' out of place: {_HYPHEN_HINT} and nothing else"
            inner = _parsed(word)
            if isinstance(inner, str):
                inner = inner.replace("a comparator", "a version, x-range or comparator")
                return inner if inner.startswith(quote(word)) else f"{quote(word)}: {inner}"
    return reason
