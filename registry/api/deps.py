"""Request dependencies: the app's state and read sessions (write sessions: registry.api.auth)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from registry.settings import Settings
from registry.stores import Store


@dataclass
class AppState:
    settings: Settings
    engine: Engine  # for the hot reads that need no ORM (resolve)
    sessions: sessionmaker[Session]
    store: Store


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
