"""Alembic environment: runs on the engine the registry passes in, or on ``STANCE_*`` settings."""

from __future__ import annotations

from alembic import context

from registry.models import Base


def _engine():
    engine = context.config.attributes.get("engine")
    if engine is not None:
        return engine
    # Plain `alembic upgrade head` from the repository root uses the same settings as `stance`.
    from registry.db import make_engine
    from registry.settings import Settings

    return make_engine(context.config.get_main_option("sqlalchemy.url") or Settings().catalog_url)


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run against a database")
run_migrations_online()
