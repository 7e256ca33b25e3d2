"""Authentication for the API: bearer tokens, anonymous reads, refusals audited, failures limited.

Failed authentications are counted per client address in this process: more than
``FAILURES`` within ``WINDOW`` seconds and that address gets 429 until the window clears. With
several workers each keeps its own count (documented; a shared limiter belongs in the proxy).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry.access import Caller
from registry.api.deps import AppState, StateDep
from registry.catalog.audit import refusals_recorded
from registry.catalog.db import transaction
from registry.catalog.tokens import touch, verify
from registry.errors import RateLimited, Unauthorized

FAILURES, WINDOW = 20, 60.0


class FailedAuthLimiter:
    """Sliding-window count of failed authentications per client address."""

    def __init__(self, failures: int = FAILURES, window: float = WINDOW) -> None:
        self.failures, self.window = failures, window
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, address: str, now: float) -> deque[float]:
        seen = self._seen[address]
        while seen and now - seen[0] > self.window:
            seen.popleft()
        return seen

    def check(self, address: str) -> None:
        with self._lock:
            if len(self._trim(address, time.monotonic())) >= self.failures:
                raise RateLimited(f"too many failed authentications from {address}; retry later")

    def fail(self, address: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._trim(address, now).append(now)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _action(request: Request) -> str:
    return getattr(request.scope.get("route"), "name", None) or request.method


async def caller(request: Request, app: StateDep) -> Caller:
    """The caller behind the Authorization header; anonymous without one.

    async, so anonymous reads (the hot path) never enter the thread pool; tokens are checked
    against the catalog in one pool call.
    """
    header = request.headers.get("authorization")
    address = _address(request)
    if not header:
        return Caller(f"anonymous@{address}", None)
    return await run_in_threadpool(_authenticate, request, app, header, address)


def _authenticate(request: Request, app: AppState, header: str, address: str) -> Caller:
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    limiter.check(address)
    scheme, _, presented = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        with app.sessions() as session:
            found, stale = verify(session, presented.strip())
    except Unauthorized:
        limiter.fail(address)
        if request.method not in ("GET", "HEAD"):
            with refusals_recorded(
                app.sessions,
                actor=f"anonymous@{address}",
                action=_action(request),
                target=request.url.path,
            ):
                raise
        raise
    if stale:
        with transaction(app.sessions) as session:
            touch(session, found.actor.removeprefix("token:"))
    return found


CallerDep = Annotated[Caller, Depends(caller)]


async def require_read(request: Request, app: StateDep, who: CallerDep) -> Caller:
    """Reads are open unless STANCE_ANONYMOUS_READ=false; then any valid token may read."""
    if who.scope is None and not app.settings.anonymous_read:
        raise Unauthorized("this registry does not allow anonymous reads: send a token")
    return who


def audit_refusals(request: Request, app: StateDep, who: CallerDep) -> Iterator[Caller]:
    """Wrap a write: if it is refused, the refusal lands in the audit log (own transaction)."""
    with refusals_recorded(
        app.sessions, actor=who.actor, action=_action(request), target=request.url.path
    ):
        yield who


Reader = Annotated[Caller, Depends(require_read)]
Writer = Annotated[Caller, Depends(audit_refusals, scope="function")]


def write_session(app: StateDep, _: Writer) -> Iterator[Session]:
    """A transaction committed after the handler; set up inside the refusal audit, so a refused
    write is rolled back before its refusal is recorded."""
    with transaction(app.sessions) as session:
        yield session


WriteSessionDep = Annotated[Session, Depends(write_session, scope="function")]
