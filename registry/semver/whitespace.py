"""node-semver's ``internal/trim-comparator-whitespace.js``, ported as written.

It joins an operator to its version (``> 1.2.3`` -> ``>1.2.3``) with the same match
boundaries as the older COMPARATORTRIM regex it replaced; those boundaries decide which
spaces go, so they are kept exactly, down to the digit limits.
"""

from __future__ import annotations

from registry.semver.versions import JS_SPACE_CHARS, MAX_LENGTH, MAX_SAFE_BUILD_LENGTH

_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ID_CHARS = _DIGITS | _LETTERS | {"-"}
_PREFIX = JS_SPACE_CHARS | {"v", "="}
_VERSION_START = _DIGITS | {"x", "X", "*"}


def _at(text: str, i: int) -> str:
    return text[i] if 0 <= i < len(text) else ""


def _digits_end(text: str, start: int, limit: int) -> int:
    end = start
    while _at(text, end) in _DIGITS:
        end += 1
    return min(start + limit, end)


def _number_end(text: str, start: int, loose: bool) -> int:
    if not loose and _at(text, start) == "0":
        return start + 1
    return _digits_end(text, start, MAX_LENGTH if loose else MAX_LENGTH + 1)


def _pre_id_end(text: str, start: int, loose: bool) -> int:
    digits_end = _digits_end(text, start, MAX_LENGTH)
    if _at(text, digits_end) in _LETTERS or _at(text, digits_end) == "-":
        end = digits_end + 1
        limit = end + MAX_SAFE_BUILD_LENGTH
        while end < limit and _at(text, end) in _ID_CHARS:
            end += 1
        return end
    return _number_end(text, start, loose)


def _prerelease_end(text: str, start: int, loose: bool) -> int:
    hyphen = _at(text, start) == "-"
    if not loose and not hyphen:
        return start
    id_start = start + hyphen
    end = _pre_id_end(text, id_start, loose)
    if end == id_start:
        if not loose or not hyphen:
            return start
        end = _pre_id_end(text, start, loose)
    while _at(text, end) == ".":
        following = _pre_id_end(text, end + 1, loose)
        if following == end + 1:
            break
        end = following
    return end


def _build_id_end(text: str, start: int) -> int:
    end = start
    while end - start < MAX_SAFE_BUILD_LENGTH and _at(text, end) in _ID_CHARS:
        end += 1
    return end


def _build_end(text: str, start: int) -> int:
    if _at(text, start) != "+":
        return start
    end = _build_id_end(text, start + 1)
    if end == start + 1:
        return start
    while _at(text, end) == ".":
        following = _build_id_end(text, end + 1)
        if following == end + 1:
            break
        end = following
    return end


def _loose_full_end(text: str, start: int) -> int:
    end = start
    for component in range(3):
        following = _number_end(text, end, True)
        if following == end:
            return start
        end = following
        if component < 2:
            if _at(text, end) != ".":
                return start
            end += 1
    return _build_end(text, _prerelease_end(text, end, True))


def _partial_component_end(text: str, start: int) -> int:
    if _at(text, start) in _DIGITS:
        return _number_end(text, start, False)
    return start + 1 if _at(text, start) in _VERSION_START else start


def _partial_end(text: str, start: int) -> int:
    end = _partial_component_end(text, start)
    for _ in range(2):
        if _at(text, end) != ".":
            return end
        following = _partial_component_end(text, end + 1)
        if following == end + 1:
            return end
        end = following
    return _build_end(text, _prerelease_end(text, end, False))


def _removable_space(text: str, start: int) -> int:
    position = start
    if _at(text, position) in JS_SPACE_CHARS:
        position += 1
    if _at(text, position) in ("<", ">"):
        position += 1
    if _at(text, position) == "=":
        position += 1
    return position if _at(text, position) in JS_SPACE_CHARS else -1


def trim_comparator_whitespace(text: str) -> str:
    pieces: list[str] = []
    copy_from = cursor = 0
    while cursor < len(text):
        match_start = cursor
        if text[cursor] in ("<", ">"):
            cursor += 1
        elif text[cursor] not in _PREFIX and text[cursor] not in _VERSION_START:
            cursor += 1
            continue
        while cursor < len(text) and text[cursor] in _PREFIX:
            cursor += 1
        if _at(text, cursor) not in _VERSION_START:
            continue
        space = _removable_space(text, match_start)
        if space != -1:
            pieces.append(text[copy_from:space])
            copy_from = space + 1
        full_end = _loose_full_end(text, cursor)
        cursor = full_end if full_end != cursor else _partial_end(text, cursor)
    return "".join(pieces) + text[copy_from:]
