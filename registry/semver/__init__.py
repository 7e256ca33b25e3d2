"""npm's ``semver`` 7 versions and ranges, with its default options (not loose, no prereleases).

A port of node-semver's own parser, step for step: its regular expressions (in their
"safe" bounded form), the same rewrites in the same order (build strip, hyphen, comparator
whitespace, tilde, caret, x-range, star, ``>=0.0.0``), the same comparator test and the same
prerelease rule. Ranges are not re-derived from a grammar of our own because npm's meaning
is the rewriting, quirks included (``* || 1.0.0-rc.1`` admits no prerelease; ``~x.9`` is
``*``). ``tests/test_semver_oracle.py`` holds it to the real package. Pure: no I/O.
"""

from registry.semver.ranges import (
    Range,
    is_valid_range,
    max_satisfying,
    range_error,
    satisfies,
)
from registry.semver.versions import MAX_LENGTH, MAX_SAFE_INTEGER, Version, quote, trim

__all__ = [
    "MAX_LENGTH",
    "MAX_SAFE_INTEGER",
    "Range",
    "Version",
    "is_valid_range",
    "max_satisfying",
    "quote",
    "range_error",
    "satisfies",
    "trim",
]
