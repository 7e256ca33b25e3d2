"""Specs, names, versions and aliases: what parses, what is refused, and why.

Range meaning is held to npm's own semver in test_semver_oracle.py; the cases here pin the
few answers a reader should be able to check by eye.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import InvalidSpec
from registry.semver import Version
from registry.spec import (
    SelectorKind,
    parse_publish_target,
    parse_spec,
    parse_version,
    select,
    validate_alias,
    validate_name,
)


@pytest.mark.parametrize(
    ("text", "namespace", "name", "selector", "kind"),
    [
        ("curious", "default", "curious", "latest", SelectorKind.LATEST),
        ("curious@latest", "default", "curious", "latest", SelectorKind.LATEST),
        ("team-a/curious@1.2.0", "team-a", "curious", "1.2.0", SelectorKind.EXACT),
        ("curious@2.0.0-rc.1", "default", "curious", "2.0.0-rc.1", SelectorKind.EXACT),
        ("curious@^1.2", "default", "curious", "^1.2", SelectorKind.RANGE),
        ("curious@~1.2.3", "default", "curious", "~1.2.3", SelectorKind.RANGE),
        ("curious@>=1.0 <2", "default", "curious", ">=1.0 <2", SelectorKind.RANGE),
        ("curious@1.2", "default", "curious", "1.2", SelectorKind.RANGE),
        # npm ranges that are not canonical versions: never exact, so never a yanked version
        ("curious@=1.3.0-beta.2", "default", "curious", "=1.3.0-beta.2", SelectorKind.RANGE),
        ("curious@v1.2.0", "default", "curious", "v1.2.0", SelectorKind.RANGE),
        ("curious@1.2.3+build", "default", "curious", "1.2.3+build", SelectorKind.RANGE),
        ("curious@>= 1.0 < 2", "default", "curious", ">= 1.0 < 2", SelectorKind.RANGE),
        ("curious@~>1.2", "default", "curious", "~>1.2", SelectorKind.RANGE),
        ("curious@^x", "default", "curious", "^x", SelectorKind.RANGE),
        ("curious@1.0.0 - x", "default", "curious", "1.0.0 - x", SelectorKind.RANGE),
        ("curious@1.0.0 -  2.0.0", "default", "curious", "1.0.0 -  2.0.0", SelectorKind.RANGE),
        ("curious@x", "default", "curious", "x", SelectorKind.RANGE),
        ("curious@ ^1.2\ufeff", "default", "curious", "^1.2", SelectorKind.RANGE),
        ("curious@prod", "default", "curious", "prod", SelectorKind.ALIAS),
        ("a.b_c-1@staging", "default", "a.b_c-1", "staging", SelectorKind.ALIAS),
        ("x@sha256:" + "ab" * 32, "default", "x", "sha256:" + "ab" * 32, SelectorKind.DIGEST),
    ],
)
def test_parse_spec(
    text: str, namespace: str, name: str, selector: str, kind: SelectorKind
) -> None:
    spec = parse_spec(text)
    assert (spec.namespace, spec.name, spec.selector, spec.kind) == (
        namespace,
        name,
        selector,
        kind,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Curious", "invalid name 'Curious'"),
        ("-lead", "invalid name '-lead'"),
        ("a" * 65, "invalid name"),
        ("", "invalid name ''"),
        ("a/b/c", "at most one '/'"),
        ("BAD/x", "invalid namespace 'BAD'"),
        ("x@sha256:abc", "invalid digest"),
        ("x@!!", "invalid selector '!!'"),
        ("x@foo - bar", "invalid selector 'foo - bar': 'foo' is not a version"),
        ("x@>=1.0.0 - 2.0.0", "'-' out of place: a hyphen range is two plain versions"),
        ("x@^1 - 2", "'-' out of place"),
        ("x@=1.0.0 - 2", "'=1.0.0 - 2': a hyphen range is two plain versions or x-ranges"),
        ("x@9007199254740992.0.0", "major version 9007199254740992 is larger than"),
        ("x@^1.2\x85", "invalid selector"),  # npm's trim keeps \x85, and refuses it
        ("x@1.2.3-01", "'1.2.3-01' is not a version"),
        ("x@>=1 <", "'<' is not a version"),
    ],
)
def test_parse_spec_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(text)


@pytest.mark.parametrize(
    "alias", ["x", "v1", "latest", "1abc", "Prod", "p rod", "*", "x.x", "v1.2", "x.x.x-rc"]
)
def test_alias_names_never_parse_as_versions(alias: str) -> None:
    with pytest.raises(InvalidSpec):
        validate_alias(alias)


@pytest.mark.parametrize("alias", ["prod", "staging", "canary-2", "team.prod"])
def test_alias_names_accepted(alias: str) -> None:
    assert validate_alias(alias) == alias


@pytest.mark.parametrize(
    "target",
    ["x", "x@", "x@^1", "x@prod", "x@1.0", "x@v1.0.0", "x@=1.0.0", "x@9007199254740992.0.0"],
)
def test_publish_target_needs_exact_version(target: str) -> None:
    with pytest.raises(InvalidSpec, match="expected (NAME@VERSION|a semantic version)"):
        parse_publish_target(target)


def test_publish_target_refuses_build_metadata() -> None:
    with pytest.raises(InvalidSpec, match=r"build metadata \(\+\.\.\.\) is not allowed"):
        parse_publish_target("x@1.0.0+build")


VERSIONS = ["1.0.0", "1.2.0", "1.2.5", "1.3.0-rc.1", "1.9.9"]
VERSIONS += ["2.0.0-rc.1", "2.0.0-rc.5", "2.0.0", "2.0.1"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("^1.2", "1.9.9"),
        ("~1.2.0", "1.2.5"),
        (">=1.0 <2", "1.9.9"),
        (">=2", "2.0.1"),
        ("^3", None),
        # npm's prerelease rule: a prerelease only when a bound names its major.minor.patch
        ("<2", "1.9.9"),
        ("<=2.0.0-rc.5", "2.0.0-rc.5"),
        ("1.0.0 - 2.0.0-rc.1", "2.0.0-rc.1"),
        ("~2.0.0-rc.1", "2.0.1"),
        ("=1.3.0-rc.1", "1.3.0-rc.1"),
        ("^1.3.0-rc.0", "1.9.9"),
        ("* || 2.0.0-rc.1", "2.0.1"),
        # syntax npm accepts
        ("1.2.5+build", "1.2.5"),
        (">= 1.0 < 1.3", "1.2.5"),
        ("~>1.2", "1.2.5"),
        (">=v1.2 <v2", "1.9.9"),
        ("1.0.0 - x", "2.0.1"),
    ],
)
def test_range_selection_follows_npm(selector: str, expected: str | None) -> None:
    assert select(VERSIONS, selector) == expected


@pytest.mark.parametrize("selector", ["foo - bar", ">=1.0.0 - 2.0.0", "^1 - 2", "", "prod"])
def test_select_refuses_what_npm_refuses(selector: str) -> None:
    if selector == "":  # npm reads the empty range as *
        assert select(VERSIONS, selector) == "2.0.1"
        return
    with pytest.raises(InvalidSpec, match="invalid range"):
        select(VERSIONS, selector)


def test_versions_order_by_semver_precedence() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta"]
    ordered += ["1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0"]
    parsed = [parse_version(v) for v in reversed(ordered)]
    assert [str(v) for v in sorted(parsed)] == ordered
    version = parse_version("2.0.0-rc.1")
    assert isinstance(version, Version)
    assert (version.major, version.minor, version.patch, version.prerelease) == (2, 0, 0, ("rc", 1))
    assert not parse_version("2.0.0").prerelease
    assert parse_version("1.0.0") == Version("1.0.0+build")
    assert parse_version("2.0.0") > version > parse_version("2.0.0-beta.9")


@given(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True))
def test_every_valid_name_round_trips(name: str) -> None:
    assert validate_name(name) == name
    assert parse_spec(f"{name}@1.0.0").name == name


@given(st.text(max_size=80))
def test_parse_spec_never_crashes(text: str) -> None:
    with contextlib.suppress(InvalidSpec):
        parse_spec(text)
