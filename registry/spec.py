"""Parsing and validation of names, versions, aliases and specs (``[ns/]name[@selector]``).

Ranges are npm-style and evaluated by ``semantic_version.NpmSpec``; nothing here re-implements
semver precedence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import semantic_version

from registry.errors import InvalidSpec

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


def parse_version(value: str) -> semantic_version.Version:
    """Parse an exact semantic version (``1.2.0``, ``2.0.0-rc.1``); build metadata is refused."""
    try:
        version = semantic_version.Version(value)
    except ValueError:
        raise InvalidSpec(
            f"invalid version {value!r}: expected a semantic version such as 1.2.0 or 2.0.0-rc.1"
        ) from None
    if version.build:
        raise InvalidSpec(f"invalid version {value!r}: build metadata (+...) is not allowed")
    return version


def _parses_as_range(value: str) -> bool:
    try:
        semantic_version.NpmSpec(value)
    except ValueError:
        return False
    return True


def validate_alias(value: str) -> str:
    """Return ``value`` if it can name an alias: starts with a letter, never parses as a version."""
    if value == LATEST:
        raise InvalidSpec("'latest' is implicit (highest non-yanked release) and cannot be set")
    if not _ALIAS.fullmatch(value) or _parses_as_range(value):
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
    try:
        semantic_version.Version(selector)
    except ValueError:
        pass
    else:
        parse_version(selector)
        return SelectorKind.EXACT
    if _ALIAS.fullmatch(selector) and not _parses_as_range(selector):
        return SelectorKind.ALIAS
    if _parses_as_range(selector):
        return SelectorKind.RANGE
    raise InvalidSpec(
        f"invalid selector {selector!r}: expected a version (1.2.0), a range (^1.2, >=1.0 <2), "
        "an alias (prod) or a digest (sha256:...)"
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
    ref, _, selector = value.strip().partition("@")
    namespace, name = parse_ref(ref)
    selector = selector.strip()
    kind = _classify(selector)
    return Spec(namespace, name, selector or LATEST, kind)


def parse_publish_target(value: str) -> tuple[str, str, semantic_version.Version]:
    """Parse ``[namespace/]name@version`` (an exact version is required to publish)."""
    ref, sep, version = value.strip().partition("@")
    if not sep or not version:
        raise InvalidSpec(f"invalid target {value!r}: expected NAME@VERSION, e.g. my-role@1.0.0")
    namespace, name = parse_ref(ref)
    return namespace, name, parse_version(version)


def select(versions: list[str], selector: str) -> str | None:
    """The highest of ``versions`` that the npm-style range ``selector`` admits, if any."""
    spec = semantic_version.NpmSpec(selector)
    best = spec.select(semantic_version.Version(v) for v in versions)
    return str(best) if best is not None else None
