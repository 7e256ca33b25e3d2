"""Fixtures: real SQLite and PostgreSQL catalogs migrated by Alembic, real adapters, temp homes."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, MetaData, select, text
from sqlalchemy.orm import Session

from registry.catalog.db import make_engine, upgrade
from registry.catalog.models import Base
from registry.embedded import EmbeddedRegistry
from registry.settings import Settings
from registry.stores.local import LocalStore
from tests.factories import make_adapter

PG_SERVER = os.environ.get("STANCE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own STANCE_HOME and caches; the developer's ~/.stance is never used."""
    for key in [k for k in os.environ if k.startswith("STANCE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("STANCE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test process; PostgreSQL down is a failure."""
    name = f"stance_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER}: {exc}", pytrace=False)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(PG_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite catalog, copied for each test (migrating once per session is enough)."""
    path = tmp_path_factory.mktemp("template") / "catalog.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _truncate(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated catalog on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "catalog.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_url")
        _truncate(url)
        yield url


@pytest.fixture
def settings(catalog_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("STANCE_DATABASE_URL", catalog_url)
    return Settings()


@pytest.fixture
def registry(settings: Settings) -> Iterator[EmbeddedRegistry]:
    reg = EmbeddedRegistry(settings, actor="test")
    yield reg
    reg.close()


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    eng = make_engine(catalog_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test (savepoints inside)."""
    with engine.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as s:
            yield s
        outer.rollback()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A few real PEFT adapters built once per session; copy before modifying."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "curious": make_adapter(root / "curious", seed=1),
        "confident": make_adapter(root / "confident", seed=2),
        "engaged": make_adapter(root / "engaged", seed=3, r=4, lora_alpha=8),
        "untrained": make_adapter(root / "untrained", trained=False),
    }


def snapshot(
    url: str, store_root: Path, *, ignore: tuple[str, ...] = ()
) -> tuple[dict[str, list[tuple]], list[str]]:
    """Every catalog row and every stored file, to assert that a refusal changed nothing.

    The audit log is left out: recording the refusal is the one change a refusal makes.
    ``ignore`` leaves out more tables (tokens record when they were last used).
    """
    engine = make_engine(url)
    rows = {}
    with engine.connect() as conn:
        meta = MetaData()
        meta.reflect(conn)
        for table in meta.sorted_tables:
            if table.name == "audit_events" or table.name in ignore:
                continue
            rows[table.name] = sorted(map(tuple, conn.execute(select(table))), key=repr)
    engine.dispose()
    files = (
        sorted(str(p.relative_to(store_root)) for p in store_root.rglob("*"))
        if store_root.exists()
        else []
    )
    return rows, files


# Real `stance serve` processes are used beyond tests/api (the loader follows a live server).
from tests.api.conftest import operator, serve  # noqa: E402, F401
from tests.reliability.postgres import cluster  # noqa: E402, F401 (a private PostgreSQL)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-model tests first: one started last would be the whole suite's tail on 2 cores,
    the other worker idle. The sort is stable, so every worker collects the same order."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
