"""Alembic environment: runs on the engine the registry passes in, or on ``STANCE_*`` settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from registry.catalog.models import Base


def _engine():
    engine = context.config.attributes.get("engine")
    if engine is not None:
        return engine
    # Plain `alembic upgrade head` from the repository root uses the same settings as `stance`.
    from registry.catalog.db import make_engine
    from registry.settings import Settings

    return make_engine(context.config.get_main_option("sqlalchemy.url") or Settings().catalog_url)


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    # On the DBAPI connection, before SQLAlchemy begins: SQLite ignores this PRAGMA inside a
    # transaction.
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={int(on)}")


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        # transactional_ddl: SQLite has it, and one transaction for the whole run (its write
        # lock taken up front by registry.catalog.db.upgrade) lets concurrent first-use
        # migrations take turns; Alembic's SQLite default commits after every revision.
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
            transactional_ddl=True,
        )
        # SQLite's batch mode rebuilds a table (copy, drop, rename); with foreign keys enforced,
        # the drop fails once other tables' rows reference it. So they are off while migrating,
        # and a full check stands in for them before the migration commits.
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            with context.begin_transaction():
                context.run_migrations()
                broken = sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"migration left dangling references: {broken[:5]}")
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                _sqlite_foreign_keys(connection, on=True)


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run against a database")
run_migrations_online()
