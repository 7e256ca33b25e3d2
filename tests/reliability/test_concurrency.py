"""Sixteen publisher processes racing one version, and sixteen moving one alias, on SQLite and
PostgreSQL: the database settles every race, and nothing but a domain answer reaches a user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from registry.catalog.db import current_revision, head_revision
from registry.catalog.models import AuditEvent, Version
from registry.embedded import EmbeddedRegistry
from registry.settings import Settings
from tests.reliability.conftest import POOL, Workers, with_card, worker_settings


def _publishes(settings: Settings, folders: list[Path], targets: list[str]) -> list[dict[str, Any]]:
    where = worker_settings(settings)
    return [
        {"op": "publish", "settings": where, "folder": str(folder), "target": target}
        for folder, target in zip(folders, targets, strict=True)
    ]


def _assert_domain_answers(results: list[dict[str, Any]]) -> None:
    """No "database is locked", no driver error: every answer is a result or a domain error."""
    assert not [r for r in results if "exception" in r], results
    assert not [r for r in results if "locked" in r.get("message", "")], results


def _count(registry: EmbeddedRegistry, model: Any, *where: Any) -> int:
    with registry.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_sixteen_publishers_of_one_version(
    workers: Workers, settings: Settings, registry: EmbeddedRegistry, tiny: Path, tmp_path: Path
) -> None:
    """Same content: one create, fifteen no-ops. Other content: one winner, fifteen conflicts."""
    same = workers.race(_publishes(settings, [tiny] * POOL, ["same@1.0.0"] * POOL))
    _assert_domain_answers(same)
    assert sorted(r["created"] for r in same) == [False] * (POOL - 1) + [True]
    assert len({r["digest"] for r in same}) == 1

    folders = [with_card(tiny, tmp_path / f"v{i}", f"variant {i}\n") for i in range(POOL)]
    other = workers.race(_publishes(settings, folders, ["other@1.0.0"] * POOL))
    _assert_domain_answers(other)
    winners = [r for r in other if "created" in r]
    assert [r["created"] for r in winners] == [True]
    assert [r["error"] for r in other if "error" in r] == ["conflict"] * (POOL - 1)
    assert registry.resolve("other@1.0.0").digest == winners[0]["digest"]

    assert _count(registry, Version) == 2
    publishes = _count(
        registry, AuditEvent, AuditEvent.action == "publish", AuditEvent.outcome == "ok"
    )
    refusals = _count(registry, AuditEvent, AuditEvent.outcome == "refused: conflict")
    assert (publishes, refusals) == (2, POOL - 1)  # one create per version; every refusal
    assert registry.verify_store().ok


def test_sixteen_first_publishes_on_a_new_sqlite_catalog(
    workers: Workers, tiny: Path, tmp_path: Path
) -> None:
    """Sixteen processes that all find no catalog yet migrate it in turn (one transaction, its
    lock taken up front), then one creates the version and fifteen find it."""
    home = tmp_path / "new-home"
    where = {"home": str(home), "database_url": f"sqlite:///{home / 'catalog.db'}"}
    command = {"op": "publish", "settings": where, "folder": str(tiny), "target": "first@1.0.0"}
    results = workers.race([command] * POOL)
    _assert_domain_answers(results)
    assert sorted(r["created"] for r in results) == [False] * (POOL - 1) + [True]
    with EmbeddedRegistry(Settings(**where)) as registry:
        assert current_revision(registry.engine) == head_revision()
        assert registry.verify_store().ok


def test_sixteen_releases_then_sixteen_alias_moves(
    workers: Workers, settings: Settings, registry: EmbeddedRegistry, tiny: Path
) -> None:
    """Sixteen versions published at once keep the highest as latest; sixteen concurrent moves
    of ``prod`` (each to a version of its own) leave one history event per move, chained, and
    the alias where the last event put it."""
    registry.publish(tiny, "moved@1.0.0", alias="prod")
    versions = [f"1.0.{i}" for i in range(1, POOL + 1)]
    released = workers.race(_publishes(settings, [tiny] * POOL, [f"moved@{v}" for v in versions]))
    _assert_domain_answers(released)
    assert all(r["created"] for r in released)
    assert registry.resolve("moved").version == versions[-1]

    # prod exists and is moved by all; canary does not exist yet: all race to create it.
    for alias, first in (("prod", [(None, "1.0.0")]), ("canary", [])):
        moves = workers.race([_move(settings, alias, v) for v in versions])
        _assert_domain_answers(moves)
        assert sorted(r["version"] for r in moves) == sorted(versions)
        history = [e for e in reversed(registry.alias_history("moved")) if e.alias == alias]
        assert [(e.from_version, e.to_version) for e in history[: len(first)]] == first
        chain = history[len(first) :]
        assert len(chain) == POOL  # one event per move
        assert sorted(e.to_version for e in chain) == sorted(versions)
        assert chain[0].from_version == (first[-1][1] if first else None)
        for before, after in zip(chain, chain[1:], strict=False):
            assert after.from_version == before.to_version, history
        assert registry.resolve(f"moved@{alias}").version == chain[-1].to_version
    assert registry.verify_store().ok


def _move(settings: Settings, alias: str, version: str) -> dict[str, Any]:
    where = worker_settings(settings)
    return {"op": "alias", "settings": where, "ref": "moved", "alias": alias, "version": version}
