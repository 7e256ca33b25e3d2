"""Property-based calls generated from the live OpenAPI schema: nothing may answer 5xx."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings

from registry.api import create_app
from registry.embedded import EmbeddedRegistry
from registry.settings import Settings

EXAMPLES = 12
CALLS: list[int] = []


def test_no_server_errors(tmp_path: Path, adapters: dict[str, Path]) -> None:
    config = Settings(home=tmp_path / "home")
    with EmbeddedRegistry(config, actor="seed") as registry:  # real rows for the calls to hit
        registry.publish(adapters["curious"], "curious@1.0.0", alias="prod")
        registry.publish(adapters["confident"], "team-a/confident@0.1.0")
        admin = {"Authorization": f"Bearer {registry.create_token('admin').token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(config))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            for headers in ({}, admin):  # anonymous, and an admin who passes authorisation
                response = case.call(headers=headers)
                CALLS.append(response.status_code)
                where = (case.method, case.formatted_path, response.text[:300])
                assert response.status_code < 500, where
                if case.method != "HEAD" and response.status_code >= 400:
                    assert set(response.json()) == {"code", "message"}, where

        call()
    assert len(CALLS) > 10 * len(operations)  # every operation really was exercised
