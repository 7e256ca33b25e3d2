"""Request dependencies: the app's state and read sessions (write sessions: registry.api.auth)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from registry.catalog import pg_direct
from registry.catalog.sqlite_direct import Reader
from registry.settings import Settings
from registry.stores import Store

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    engine: Engine  # for the hot reads that need no ORM (resolve)
    sessions: sessionmaker[Session]
    store: Store
    direct: Reader | None = None  # resolve on SQLite without SQLAlchemy (catalog.sqlite_direct)
    postgres: pg_direct.Reader | None = None  # and on PostgreSQL (catalog.pg_direct)
    _heavy: anyio.CapacityLimiter | None = field(default=None, repr=False)

    async def heavy(self, work: Callable[[], T]) -> T:
        """Run CPU-heavy work (inspection, diff, similar) in a worker thread, at most
        ``analysis_workers`` at a time: off the event loop, and never holding every thread of
        the pool that cheap requests (health, resolve, tokens) need."""
        if self._heavy is None:  # made in the event loop, on first use
            self._heavy = anyio.CapacityLimiter(self.settings.analysis_workers)
        return await anyio.to_thread.run_sync(work, limiter=self._heavy)


async def state(request: Request) -> AppState:
    # async: a plain attribute read needs no trip through the thread pool.
    return request.app.state.registry


StateDep = Annotated[AppState, Depends(state)]


def read_session(app: StateDep) -> Iterator[Session]:
    with app.sessions() as session:
        yield session


# scope="function": sessions end (and commits land) before the response is sent, so a client
# that gets its answer can read what it wrote. FastAPI's default would end them afterwards.
SessionDep = Annotated[Session, Depends(read_session, scope="function")]
