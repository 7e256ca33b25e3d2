"""EmbeddedRegistry.fetch: on SQLite it resolves through the stdlib reader, with the answers,
errors and freshness of the full path (``resolve``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event

from registry.embedded import EmbeddedRegistry
from registry.errors import InvalidSpec, NotFound


def _published(registry: EmbeddedRegistry, adapters: dict[str, Path]) -> str:
    registry.publish(adapters["curious"], "curious@1.0.0")
    registry.publish(adapters["confident"], "curious@1.1.0")
    registry.set_alias("curious", "prod", "1.0.0")
    return registry.resolve("curious@1.0.0").digest


def test_fetch_finds_what_resolve_finds(
    registry: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    digest = _published(registry, adapters)
    for spec in ("curious", "curious@1.0.0", "curious@~1.0", "curious@prod", f"curious@{digest}"):
        resolution = registry.resolve(spec)
        folder = registry.fetch(spec)
        assert folder == registry.cache.version(resolution, registry.store.open), spec
        for entry in resolution.files:
            assert (folder / entry.path).stat().st_size == entry.size


def test_fetch_sees_each_commit_at_once(
    registry: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    _published(registry, adapters)
    assert registry.fetch("curious@prod").name == "1.0.0"
    registry.set_alias("curious", "prod", "1.1.0")
    assert registry.fetch("curious@prod").name == "1.1.0"
    assert registry.fetch("curious").name == "1.1.0"
    registry.yank("curious@1.1.0")
    assert registry.fetch("curious").name == "1.0.0"
    with EmbeddedRegistry(registry.settings, actor="other") as other:  # another writer
        other.publish(adapters["engaged"], "curious@1.2.0")
    folder = registry.fetch("curious")
    assert folder.name == "1.2.0"
    assert (folder / "adapter_model.safetensors").read_bytes() == (
        adapters["engaged"] / "adapter_model.safetensors"
    ).read_bytes()


def test_fetch_refuses_as_resolve_does(
    registry: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    _published(registry, adapters)
    for spec, error in (
        ("nobody@1.0.0", NotFound),
        ("curious@9.9.9", NotFound),
        ("curious@staging", NotFound),
        ("Not A Spec!", InvalidSpec),
    ):
        with pytest.raises(error) as fetched:
            registry.fetch(spec)
        with pytest.raises(error) as resolved:
            registry.resolve(spec)
        assert str(fetched.value) == str(resolved.value)


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)  # the stdlib reader's
def test_a_warm_fetch_on_sqlite_runs_no_sqlalchemy_statement(
    registry: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    _published(registry, adapters)
    registry.fetch("curious@prod")
    statements: list[str] = []
    event.listen(registry.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert registry.fetch("curious@prod").name == "1.0.0"
    assert statements == []
    with pytest.raises(NotFound):
        registry.fetch("curious@staging")  # the full path words the error
    assert statements
