"""Search pages keyset-paged by ``adapters.ref``, and the 0009 migration that backfills it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session

from registry.catalog import queries
from registry.catalog.db import alembic_config
from registry.catalog.models import Adapter
from registry.embedded import EmbeddedRegistry
from registry.schemas import SearchQuery
from registry.settings import Settings
from registry.stores.local import LocalStore
from tests.test_service import pub

# Namespace prefixes of one another, and names that sort around the "/" of a ref.
TARGETS = ["a/x", "a-b/c", "a/a.b", "a.b/z", "ab/q", "a/x-1", "b/role"]


def _walk(session: Session, **filters: object) -> list[str]:
    seen, cursor = [], None
    while True:
        page = queries.search(session, SearchQuery(limit=2, cursor=cursor, **filters))
        seen += [f"{a.namespace}/{a.name}" for a in page.items]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def test_pages_walk_every_adapter_once_in_ref_order(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    for target in TARGETS:
        pub(session, store, adapters["curious"], f"{target}@1.0.0")
    assert _walk(session) == sorted(TARGETS)
    assert _walk(session, text="x") == ["a/x", "a/x-1"]
    assert _walk(session, namespace="a") == ["a/a.b", "a/x", "a/x-1"]
    assert _walk(session, target="q_proj", rank=8) == sorted(TARGETS)
    refs = session.scalars(select(Adapter.ref).order_by(Adapter.ref)).all()
    assert refs == sorted(TARGETS)


def test_text_finds_names_that_contain_it(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    for name in ("curious-uncertainty", "a_b", "axb", "a-b.c", "ab"):
        pub(session, store, adapters["curious"], f"{name}@1.0.0")

    def found(text: str) -> list[str]:
        return [a.name for a in queries.search(session, SearchQuery(text=text)).items]

    # Through adapter_suffixes (3 characters or more): start, middle, end, whole name.
    assert found("curious") == found("ious-unc") == found("tainty") == ["curious-uncertainty"]
    assert found("curious-uncertainty") == ["curious-uncertainty"]
    assert found("a_b") == ["a_b"] and found("-b.") == ["a-b.c"] and found("xyz") == []
    assert found("b.c") == ["a-b.c"] and found("a-b{") == []
    # Shorter texts are matched on names directly; neither kind of text is a pattern.
    assert found("ab") == ["ab"] and found("b") == ["a-b.c", "a_b", "ab", "axb"]
    assert found("_") == ["a_b"] and found("%") == found("%%%") == []


def test_0009_backfills_refs_of_a_catalog_with_data(
    engine: Engine, settings: Settings, adapters: dict[str, Path]
) -> None:
    with EmbeddedRegistry(settings) as registry:
        registry.publish(adapters["curious"], "team-a/curious@1.0.0")
        registry.publish(adapters["confident"], "confident@1.0.0")
    config = alembic_config(engine)
    command.downgrade(config, "0008")
    with engine.connect() as conn:
        assert "ref" not in {c["name"] for c in inspect(conn).get_columns("adapters")}
    command.upgrade(config, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT ref FROM adapters ORDER BY ref")).scalars().all()
    assert rows == ["default/confident", "team-a/curious"]
    with EmbeddedRegistry(settings) as registry:
        registry.publish(adapters["engaged"], "team-a/engaged@1.0.0")
        found = registry.search(SearchQuery(namespace="team-a"))
    assert [a.name for a in found.items] == ["curious", "engaged"]
