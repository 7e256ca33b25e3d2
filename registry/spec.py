"""Parsing and validation of names, versions, aliases and specs (``[ns/]name[@selector]``).

Versions and ranges mean what npm's ``semver`` 7 means with its default options; the engine is
``registry.semver``. A selector is exact only as a canonical version (``1.2.0``,
``2.0.0-rc.1``); every other npm range (``=1.2.0``, ``v1.2.0``, ``1.2.0+build``) is a range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from registry.errors import InvalidSpec
from registry.semver import Range, Version, is_valid_range, quote, range_error, trim

DEFAULT_NAMESPACE = "default"
LATEST = "latest"

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_ALIAS = re.compile(r"[a-z][a-z0-9._-]{0,63}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def validate_name(value: str, *, what: str = "name") -> str:
    """Return ``value`` if it is a valid adapter or namespace name, else raise InvalidSpec."""
    if not _NAME.fullmatch(value):
        raise InvalidSpec(
            f"invalid {what} {value!r}: use 1-64 lowercase letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return value


def parse_version(value: str) -> Version:
    """Parse an exact semantic version (``1.2.0``, ``2.0.0-rc.1``); build metadata is refused."""
    try:
        version = Version.parse(value)
    except InvalidSpec:
        version = None
    if version is not None and version.build:
        raise InvalidSpec(f"invalid version {quote(value)}: build metadata (+...) is not allowed")
    # Canonical text only: npm also reads v1.2.0 and " 1.2.0", which are ranges to us.
    if version is None or str(version) != value:
        raise InvalidSpec(
            f"invalid version {quote(value)}: expected a semantic version such as 1.2.0 or "
            "2.0.0-rc.1"
        )
    return version


def _exact(selector: str) -> Version | None:
    try:
        return parse_version(selector)
    except InvalidSpec:
        return None


def validate_alias(value: str) -> str:
    """Return ``value`` if it can name an alias: starts with a letter, never parses as a version."""
    if value == LATEST:
        raise InvalidSpec("'latest' is implicit (highest non-yanked release) and cannot be set")
    if not _ALIAS.fullmatch(value) or is_valid_range(value):
        raise InvalidSpec(
            f"invalid alias {value!r}: use lowercase letters, digits, '-', '_' or '.', starting "
            "with a letter, and nothing that reads as a version or range"
        )
    return value


def validate_digest(value: str) -> str:
    """Return ``value`` if it is ``sha256:`` followed by 64 lowercase hex digits."""
    if not _DIGEST.fullmatch(value):
        raise InvalidSpec(f"invalid digest {value!r}: expected sha256:<64 hex digits>")
    return value


class SelectorKind(StrEnum):
    LATEST = "latest"
    EXACT = "exact"
    RANGE = "range"
    ALIAS = "alias"
    DIGEST = "digest"


@dataclass(frozen=True)
class Spec:
    """A parsed ``[namespace/]name[@selector]``."""

    namespace: str
    name: str
    selector: str
    kind: SelectorKind

    @property
    def ref(self) -> str:
        """``namespace/name``, the adapter this spec points into."""
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return self.ref if self.kind is SelectorKind.LATEST else f"{self.ref}@{self.selector}"


def _classify(selector: str) -> SelectorKind:
    if selector in ("", LATEST):
        return SelectorKind.LATEST
    if selector.startswith("sha256:"):
        validate_digest(selector)
        return SelectorKind.DIGEST
    if _exact(selector) is not None:
        return SelectorKind.EXACT
    why = range_error(selector)
    if why is None:
        return SelectorKind.RANGE
    if _ALIAS.fullmatch(selector):
        return SelectorKind.ALIAS
    raise InvalidSpec(
        f"invalid selector {quote(selector)}: {why}; expected a version (1.2.0), a range (^1.2, "
        ">=1.0 <2), an alias (prod) or a digest (sha256:...)"
    )


def parse_ref(value: str) -> tuple[str, str]:
    """Split ``[namespace/]name`` into a validated (namespace, name)."""
    namespace, sep, name = value.strip().rpartition("/")
    if not sep:
        namespace = DEFAULT_NAMESPACE
    elif "/" in namespace:
        raise InvalidSpec(f"invalid adapter reference {value!r}: at most one '/' is allowed")
    return validate_name(namespace, what="namespace"), validate_name(name)


def parse_spec(value: str) -> Spec:
    """Parse ``[namespace/]name[@selector]``; no selector means ``latest``."""
    ref, _, selector = value.partition("@")
    namespace, name = parse_ref(ref)
    # npm's own trim: Python's strip() would also eat \x1c-\x1f and \x85, which npm refuses.
    selector = trim(selector)
    kind = _classify(selector)
    return Spec(namespace, name, selector or LATEST, kind)


def parse_publish_target(value: str) -> tuple[str, str, Version]:
    """Parse ``[namespace/]name@version`` (an exact version is required to publish)."""
    ref, sep, version = value.strip().partition("@")
    if not sep or not version:
        raise InvalidSpec(f"invalid target {value!r}: expected NAME@VERSION, e.g. my-role@1.0.0")
    namespace, name = parse_ref(ref)
    return namespace, name, parse_version(version)


def select(versions: list[str], selector: str) -> str | None:
    """npm's ``maxSatisfying``: the highest of ``versions`` that range ``selector`` admits.

    Raises:
        InvalidSpec: ``selector`` is not a range npm accepts.
    """
    return Range(selector).max_satisfying(versions)
