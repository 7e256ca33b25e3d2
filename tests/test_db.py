"""Migrations, first-use upgrades and concurrency, on real SQLite and PostgreSQL catalogs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, inspect, select, text

from registry.access import operator
from registry.catalog import queries, service
from registry.catalog.db import (
    alembic_config,
    current_revision,
    ensure_schema,
    head_revision,
    make_engine,
    session_factory,
    transaction,
)
from registry.catalog.gc import collect_garbage, watermark
from registry.catalog.models import Adapter, AdapterTarget, Base, Version
from registry.embedded import EmbeddedRegistry
from registry.errors import RegistryError
from registry.settings import Settings
from registry.stores.local import LocalStore
from tests.conftest import _truncate
from tests.factories import make_adapter


def test_models_match_migrations(engine: Engine) -> None:
    """The ORM and the Alembic head describe the same schema (no drift, no create_all)."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_round_trip(engine: Engine) -> None:
    config = alembic_config(engine)
    command.downgrade(config, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert current_revision(engine) == head_revision()


def test_every_migration_steps_down_and_up_over_a_catalog_with_data(
    engine: Engine, settings: Settings, adapters: dict[str, Path]
) -> None:
    """Catalogs that hold versions migrate too: on SQLite, batch mode rebuilds a table that
    others reference, which must not trip foreign keys; nothing is lost on the way."""
    with EmbeddedRegistry(settings) as registry:
        registry.publish(adapters["curious"], "curious@1.0.0", alias="prod")
        expected = registry.resolve("curious@prod")
    config = alembic_config(engine)
    revisions = [r.revision for r in ScriptDirectory.from_config(config).walk_revisions()]
    for revision in revisions[1:-1]:  # newest first; stop above the first (it drops all)
        command.downgrade(config, revision)
        command.upgrade(config, "head")
    with EmbeddedRegistry(settings) as registry:
        assert registry.resolve("curious@prod") == expected
        registry.publish(adapters["confident"], "confident@1.0.0")  # still writable


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    engine.dispose()


def test_first_use_upgrades_an_empty_catalog(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'catalog.db'}")
    ensure_schema(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_stale_shared_catalog_is_refused(pg_url: str) -> None:
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        with pytest.raises(RegistryError, match="run `stance db upgrade`"):
            ensure_schema(engine)
    finally:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE alembic_version SET version_num = :h"), {"h": head_revision()}
            )
        engine.dispose()


def test_unreachable_catalog_is_a_clear_error() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(RegistryError, match="cannot reach the catalog"):
        ensure_schema(engine)
    engine.dispose()


PUBLISH = """
import json, sys
from pathlib import Path
from registry.embedded import EmbeddedRegistry
from registry.errors import RegistryError
registry = EmbeddedRegistry()
sys.stdin.readline()  # start together
try:
    r = registry.publish(Path(sys.argv[1]), sys.argv[2])
    print(json.dumps({"created": r.created}))
except RegistryError as e:
    print(json.dumps({"error": e.code}))
"""


def _race(settings: Settings, folders: list[Path], target: str) -> list[dict]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISH, str(f), target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for f in folders
    ]
    for p in procs:  # both are importing/connected before either is told to publish
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return sorted((json.loads(o) for o in outs), key=json.dumps)


def test_concurrent_identical_publishes_both_succeed(
    settings: Settings, adapters: dict[str, Path]
) -> None:
    results = _race(settings, [adapters["curious"]] * 2, "raced@1.0.0")
    assert results == [{"created": False}, {"created": True}]
    engine = make_engine(settings.catalog_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Version)) == 1
    engine.dispose()


def test_concurrent_different_publishes_one_conflicts(
    settings: Settings, adapters: dict[str, Path]
) -> None:
    results = _race(settings, [adapters["curious"], adapters["confident"]], "raced@1.0.0")
    assert results == [{"created": True}, {"error": "conflict"}]


def test_concurrent_releases_of_one_adapter_keep_the_highest_latest(
    pg_url: str, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """2.0.0 is recorded but not committed when 1.1.0 is published beside it: the second
    writer must wait and then see 2.0.0, not overwrite it with its own stale answer."""
    _truncate(pg_url)
    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    store = LocalStore(tmp_path / "store")
    with sessions() as session:
        mark = watermark(session)

    def stage(folder: Path) -> service.Staged:
        return service.stage_folder(store, folder, max_weights_bytes=10**9, mark=mark)

    higher = stage(adapters["curious"])  # q_proj, v_proj
    lower = stage(make_adapter(tmp_path / "k", target_modules=("k_proj",)))
    with transaction(sessions) as first:
        service.publish(first, stage(adapters["confident"]), target="r@1.0.0", caller=operator("t"))
    errors: list[BaseException] = []

    def publish_lower() -> None:
        try:
            with transaction(sessions) as second:
                service.publish(second, lower, target="r@1.1.0", caller=operator("t"))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with transaction(sessions) as first:
        service.publish(first, higher, target="r@2.0.0", caller=operator("t"))
        worker = _blocked(engine, publish_lower)
    worker.join(timeout=60)
    assert not worker.is_alive() and errors == []
    with sessions() as session:
        assert queries.resolve_spec(session, "r").version == "2.0.0"
        modules = session.scalars(
            select(AdapterTarget.module).join(Adapter).order_by(AdapterTarget.module)
        ).all()
    assert modules == ["q_proj", "v_proj"]
    engine.dispose()


def _blocked(engine: Engine, work: Callable[[], None]) -> threading.Thread:
    """``work`` started in a thread, returned once it waits on a lock (or has ended)."""
    worker = threading.Thread(target=work)
    worker.start()
    with engine.connect() as watcher:
        while worker.is_alive() and not watcher.scalar(
            text("SELECT count(*) FROM pg_locks WHERE NOT granted")
        ):
            time.sleep(0.005)  # polling a condition, not hoping a race is over
    return worker


def test_a_collection_waits_for_a_publish_committing_beside_it(
    pg_url: str, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """A publish has inserted its version, not yet committed, when gc starts: gc must wait,
    then see the version's blobs as referenced, never delete blobs a version now needs."""
    _truncate(pg_url)
    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    store = LocalStore(tmp_path / "store")
    with sessions() as session:
        staged = service.stage_folder(
            store, adapters["curious"], max_weights_bytes=10**9, mark=watermark(session)
        )
    outcomes: list[object] = []

    def collect() -> None:
        later = datetime.now(UTC) + timedelta(hours=2)  # every blob is old enough
        try:
            outcomes.append(collect_garbage(sessions, store, now=later).digests)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            outcomes.append(exc)

    with transaction(sessions) as publisher:
        service.publish(publisher, staged, target="held@1.0.0", caller=operator("t"))
        worker = _blocked(engine, collect)
        assert worker.is_alive()  # gc waits for the publish, not the other way round
    worker.join(timeout=60)
    assert not worker.is_alive() and outcomes == [[]]
    assert {blob.digest for blob in store.iter()} == {f.digest for f in staged.manifest.files}
    engine.dispose()
