"""Ranges through the real catalog and the HTTP API, on SQLite and PostgreSQL (issue 15).

A range resolves to npm's ``maxSatisfying`` over the non-yanked versions: the expected
answers come from npm's semver itself, asked through the oracle of ``test_semver_oracle``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from registry.embedded import EmbeddedRegistry
from registry.errors import InvalidSpec, NotFound
from tests import test_semver_oracle
from tests.api import conftest as api
from tests.test_semver_oracle import NodeSemver

# Fixtures from elsewhere: npm's semver in node, and the ASGI client of tests/api.
node_semver = test_semver_oracle.node_semver
client = api.client

PUBLISHED = [
    "1.2.3",
    "1.3.0-beta.2",
    "1.3.0",
    "1.9.9",
    "2.0.0-rc.1",
    "2.0.0-rc.5",
    "2.0.0",
    "2.0.1",
    "2.1.0-rc.1",
]
YANKED = {"1.3.0", "2.0.0-rc.5"}
SELECTORS = [
    "<2",
    "<2.0.0",
    "<1",
    "<=1.2.3",
    ">=2.0.0-rc.1 <2.0.0",
    "<=2.0.0-rc.5",
    "1.0.0 - 2.0.0-rc.1",
    "~2.0.0-rc.1",
    "=1.3.0-beta.2",
    "^1.3.0-beta.1",
    "~1.3.0-beta.2",
    ">=2.1.0-rc.0",
    "^2.1.0-rc.1 || 1.x",
    "* || 2.0.0-rc.1",
    "1.3.0-beta.2 - 1.3.0",
    "=1.3.0",
    "^1.2",
    ">= 1.0 < 2",
    "~>1.3",
    "2.0.0+build",
    "v2.0.0-rc.1",
    "^x",
    "1.0.0 - x",
]
MALFORMED = [
    "foo - bar",
    ">=1.0.0 - 2.0.0",
    "^1 - 2",
    "1.2.3-01",
    "9007199254740992.0.0",
    "^9007199254740991",
    ">=1.0.0 || ~",
    "<>1",
    "1.2.3 - 2.0.0 - 3",
    "~1.2.3beta",
]


@pytest.fixture
def series(registry: EmbeddedRegistry, adapters: dict[str, Path]) -> EmbeddedRegistry:
    """``role`` published at every version of PUBLISHED, the YANKED ones yanked."""
    folders = list(adapters.values())
    for i, version in enumerate(PUBLISHED):
        registry.publish(folders[i % len(folders)], f"role@{version}")
    for version in YANKED:
        registry.yank(f"role@{version}", reason="bad eval")
    return registry


def test_ranges_resolve_as_npm_max_satisfying(
    series: EmbeddedRegistry, node_semver: NodeSemver
) -> None:
    live = [v for v in PUBLISHED if v not in YANKED]
    for selector, answer in zip(SELECTORS, node_semver.ask(SELECTORS, live), strict=True):
        assert answer["valid"], selector
        if answer["max"] is None:
            with pytest.raises(NotFound, match="has no non-yanked version matching"):
                series.resolve(f"role@{selector}")
        else:
            assert series.resolve(f"role@{selector}").version == answer["max"], selector


def test_prerelease_answers_that_issue_15_found_wrong(series: EmbeddedRegistry) -> None:
    wanted = {
        "<2": "1.9.9",  # never a prerelease of the bound itself
        "<2.0.0": "1.9.9",
        "<=1.2.3": "1.2.3",
        ">=2.0.0-rc.1 <2.0.0": "2.0.0-rc.1",  # rc.5 is yanked
        "<=2.0.0-rc.5": "2.0.0-rc.1",
        "1.0.0 - 2.0.0-rc.1": "2.0.0-rc.1",
        "~2.0.0-rc.1": "2.0.1",
        "=1.3.0-beta.2": "1.3.0-beta.2",
    }
    assert {s: series.resolve(f"role@{s}").version for s in wanted} == wanted


def test_nothing_below_one_is_not_found(series: EmbeddedRegistry) -> None:
    with pytest.raises(NotFound, match="role has no non-yanked version matching '<1'"):
        series.resolve("role@<1")


def test_exact_versions_and_digests_still_reach_yanked_ones(series: EmbeddedRegistry) -> None:
    exact = series.resolve("role@1.3.0")
    assert (exact.version, exact.yanked, exact.yanked_reason) == ("1.3.0", True, "bad eval")
    assert series.resolve("role@2.0.0-rc.5").yanked
    # ``=1.3.0`` is a range, and a range never selects a yanked version.
    with pytest.raises(NotFound):
        series.resolve("role@=1.3.0")


def test_malformed_ranges_are_bad_spec_in_python_and_http(
    series: EmbeddedRegistry, node_semver: NodeSemver, client: TestClient
) -> None:
    for selector, answer in zip(MALFORMED, node_semver.ask(MALFORMED, PUBLISHED), strict=True):
        assert not answer["valid"], selector
        with pytest.raises(InvalidSpec) as refused:
            series.resolve(f"role@{selector}")
        assert refused.value.code == "bad_spec"
        assert refused.value.message.startswith(f"invalid selector {selector!r}: ")
        assert "\n" not in refused.value.message
        response = client.get("/v1/resolve", params={"spec": f"role@{selector}"})
        assert response.status_code == 400, response.text
        assert response.json() == {"code": "bad_spec", "message": refused.value.message}


def test_resolve_endpoint_follows_the_prerelease_rule(
    series: EmbeddedRegistry,
    client: TestClient,
) -> None:
    wanted = {"<2": "1.9.9", "~2.0.0-rc.1": "2.0.1", ">= 2.1.0-rc.0": "2.1.0-rc.1", "<1": None}
    for selector, expected in wanted.items():
        response = client.get("/v1/resolve", params={"spec": f"role@{selector}"})
        if expected is None:
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "not_found"
        else:
            assert response.json()["version"] == expected, selector
