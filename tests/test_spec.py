"""Specs, names, versions and aliases: what parses, what is refused, and why."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import InvalidSpec
from registry.spec import (
    SelectorKind,
    parse_publish_target,
    parse_spec,
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
        ("x@1.0.0+build", "build metadata"),
        ("x@!!", "invalid selector '!!'"),
    ],
)
def test_parse_spec_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(text)


@pytest.mark.parametrize("alias", ["x", "v1", "latest", "1abc", "Prod", "p rod", "*"])
def test_alias_names_never_parse_as_versions(alias: str) -> None:
    with pytest.raises(InvalidSpec):
        validate_alias(alias)


@pytest.mark.parametrize("alias", ["prod", "staging", "canary-2", "team.prod"])
def test_alias_names_accepted(alias: str) -> None:
    assert validate_alias(alias) == alias


@pytest.mark.parametrize("target", ["x", "x@", "x@^1", "x@prod", "x@1.0"])
def test_publish_target_needs_exact_version(target: str) -> None:
    with pytest.raises(InvalidSpec):
        parse_publish_target(target)


def test_range_selection_follows_npm() -> None:
    versions = ["1.0.0", "1.2.0", "1.2.5", "1.3.0-rc.1", "2.0.0"]
    assert select(versions, "^1.2") == "1.2.5"
    assert select(versions, "~1.2.0") == "1.2.5"
    assert select(versions, ">=1.0 <2") == "1.2.5"
    assert select(versions, ">=2") == "2.0.0"
    assert select(versions, "^3") is None


@given(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True))
def test_every_valid_name_round_trips(name: str) -> None:
    assert validate_name(name) == name
    assert parse_spec(f"{name}@1.0.0").name == name


@given(st.text(max_size=80))
def test_parse_spec_never_crashes(text: str) -> None:
    with contextlib.suppress(InvalidSpec):
        parse_spec(text)
