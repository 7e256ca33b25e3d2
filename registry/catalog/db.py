"""Catalog engines, sessions and schema upgrades (SQLite by default, PostgreSQL for teams)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker

import migrations
from registry.catalog.revision import HEAD_REVISION
from registry.errors import RegistryError, Unreachable

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (0.25 s to import) is loaded only to migrate: checking that the schema is current
# compares the stored revision with HEAD_REVISION (issue 16: the CLI's start-up budget).
MIGRATIONS = Path(migrations.__file__).parent
SQLITE_BUSY_MS = 15_000
WRITE_OPTION = "stance_write"
POOL_SIZE = 40


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINTs; SQLAlchemy emits BEGIN instead.
    dbapi_connection.isolation_level = None
    # WAL lets readers run beside one writer; the busy timeout makes writers queue, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock up front: a deferred transaction that reads first and writes
    # later fails at once with SQLITE_BUSY when another writer got in between.
    write = conn.get_execution_options().get(WRITE_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _unreachable(context: ExceptionContext) -> None:
    """The one translation of a lost catalog for every caller: a database that is down,
    restarting or cut off raises Unreachable (HTTP 503, CLI exit 1), not a driver error."""
    if context.is_pre_ping:
        return  # the pool's own probe: it reconnects past a dead connection by itself
    if context.is_disconnect or context.connection is None:  # lost, or never connected
        # The driver's text names hosts and ports: logged for the operator, not sent to clients.
        logging.getLogger(__name__).warning("catalog unreachable: %s", context.original_exception)
        raise Unreachable(
            "the catalog database is unreachable (down, restarting or cut off): try again"
        ) from context.original_exception


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # A pool as large as the server's thread pool (40): connections are reused, not
        # reopened with their PRAGMAs under load.
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_MS / 1000},
            pool_size=POOL_SIZE,
            max_overflow=POOL_SIZE,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        engine = create_engine(
            url, pool_pre_ping=True, pool_size=POOL_SIZE // 4, max_overflow=POOL_SIZE
        )
    event.listen(engine, "handle_error", _unreachable)
    return engine


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str | None:
    """Alembic's own head, read from the migration scripts (``HEAD_REVISION`` is its copy)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _stored_revision(conn: Connection) -> str | None:
    # What Alembic's MigrationContext.get_current_revision reads, without importing Alembic.
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return _stored_revision(conn)
    except Exception as exc:  # the driver's own errors vary; the message names the URL
        raise Unreachable(f"cannot reach the catalog at {engine.url!r}: {exc}") from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the catalog to ``revision`` with Alembic (the only way the schema changes)."""
    from alembic import command

    # One write transaction, its lock taken up front (BEGIN IMMEDIATE on SQLite): processes
    # that all find a new catalog migrate in turn, the later ones finding it current. Sixteen
    # first-use publishers otherwise met "database is locked" (issue 14).
    writer = engine.execution_options(**{WRITE_OPTION: True})
    command.upgrade(alembic_config(writer), revision)


def ensure_schema(engine: Engine) -> None:
    """Upgrade an empty or embedded (SQLite) catalog; refuse to silently migrate a shared one."""
    current = current_revision(engine)
    if current == HEAD_REVISION:
        return  # the common case, without importing Alembic
    head = head_revision()  # the scripts decide, should HEAD_REVISION lag behind a new migration
    if current == head:
        return
    with engine.connect() as conn:
        empty = not inspect(conn).get_table_names()
    if empty or engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    raise RegistryError(
        f"the catalog schema is at {current or 'an unknown revision'}, not "
        f"{head}: run `stance db upgrade`"
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@dataclass(frozen=True)
class Catalog:
    """An open catalog: the engine (for plain-connection hot reads) and its ORM sessions."""

    engine: Engine
    sessions: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()


def open_catalog(url: str) -> Catalog:
    """The catalog at ``url`` with its schema current (``ensure_schema``), ready for sessions."""
    engine = make_engine(url)
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return Catalog(engine, session_factory(engine))


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A write session: commits when the block succeeds, rolls back when it raises."""
    with factory() as session, session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session
