"""The audit log: every write, successful or refused, with actor, action, target and outcome."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from registry.catalog.db import transaction
from registry.catalog.models import AuditEvent
from registry.errors import RegistryError


def record(
    session: Session, *, actor: str, action: str, target: str, outcome: str = "ok", **detail: object
) -> None:
    """Add an audit row to the caller's transaction (it commits or rolls back with the write)."""
    session.add(
        AuditEvent(actor=actor, action=action, target=target, outcome=outcome, detail=detail)
    )


@contextmanager
def refusals_recorded(
    factory: sessionmaker[Session], *, actor: str, action: str, target: str
) -> Iterator[None]:
    """Record a refused write in a transaction of its own (the write's rows are rolled back)."""
    try:
        yield
    except RegistryError as exc:
        with transaction(factory) as session:
            record(
                session,
                actor=actor,
                action=action,
                target=target,
                outcome=f"refused: {exc.code}",
                message=exc.message,
            )
        raise
