"""Authentication for the API: bearer tokens, anonymous reads, refusals audited, failures limited.

Writes are authenticated before their body is read (``WritesAuthenticated``; FastAPI would read
a JSON body before it runs any dependency), so a refused write costs no more than its headers.

Failed authentications are counted per (client address, presented token id) in this process:
past ``FAILURES`` within ``WINDOW`` seconds that pair is answered 429 instead of 401. A valid
token is always let through: others' failures, from any address, never lock it out (behind a
proxy every client shares one address). The secrets are 256-bit random, so the limiter is not
what stops guessing; it tells misbehaving clients to stop and keeps the audit log small.

Audit actors come from authenticated identity only (``token:<id>``, or ``anonymous``); the
client address, validated as an IP address, goes into the row's detail. Refused anonymous
writes, which anyone can make, are recorded ``BURST`` per action a minute, and the next row
counts the ones left out (``repeated``).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.access import Caller
from registry.api.deps import AppState, StateDep
from registry.api.errors import error_response, status_of
from registry.catalog.audit import record, refusals_recorded
from registry.catalog.db import transaction
from registry.catalog.tokens import touch, verify
from registry.errors import RateLimited, RegistryError, Unauthorized

FAILURES, WINDOW = 20, 60.0
BURST = 10  # refused anonymous writes recorded one by one, per action and WINDOW
MAX_TRACKED = 100_000  # (address, token id) pairs remembered; the oldest are forgotten first
ANONYMOUS = "anonymous"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Where WritesAuthenticated leaves a write's caller, or why it was refused (and that the
# refusal was raised), in the request scope.
_CALLER, _REFUSED, _RAISED = "stance.caller", "stance.refused", "stance.refusal_raised"
# The id part of ``stance_<id>_<secret>`` (registry.catalog.tokens mints them).
_TOKEN_ID = re.compile(r"stance_([0-9a-f]{16})_")
_TARGET_CHARS = 512  # audit_events.target


class FailedAuthLimiter:
    """Sliding-window count of failed authentications per (address, presented token id)."""

    def __init__(self, failures: int = FAILURES, window: float = WINDOW) -> None:
        self.failures, self.window = failures, window
        self._seen: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def fail(self, address: str, token_id: str) -> None:
        """Count one failure; raise RateLimited once the pair is past its allowance."""
        key = (address, token_id)
        with self._lock:
            now = time.monotonic()
            seen = self._seen.pop(key, None) or deque()
            while seen and now - seen[0] > self.window:
                seen.popleft()
            seen.append(now)
            self._seen[key] = seen  # most recently failed last
            while len(self._seen) > MAX_TRACKED:
                self._seen.popitem(last=False)
            over = len(seen) > self.failures
        if over:
            raise RateLimited(
                f"too many failed authentications from {address} with this token; retry later"
            )


class AnonymousRefusals:
    """Audit rows for refused unauthenticated writes, at most ``BURST`` per action a window."""

    def __init__(
        self,
        burst: int = BURST,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.window, self._clock = burst, window, clock
        self._recent: dict[str, deque[float]] = {}
        self._left_out: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(
        self,
        sessions: sessionmaker[Session],
        exc: RegistryError,
        *,
        action: str,
        target: str,
        address: str,
    ) -> None:
        with self._lock:
            now = self._clock()
            recent = self._recent.setdefault(action, deque())
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if len(recent) >= self.burst:
                self._left_out[action] += 1
                return
            recent.append(now)
            repeated = self._left_out.pop(action, 0)
        with transaction(sessions) as session:
            record(
                session,
                actor=ANONYMOUS,
                action=action,
                target=target[:_TARGET_CHARS],
                outcome=f"refused: {exc.code}",
                message=exc.message,
                address=address,
                repeated=repeated,
            )


def client_address(request: Request) -> str:
    """The client's IP address (a trusted proxy's X-Forwarded-For already applied), or
    ``unknown``: never free text, since it lands in error messages and the audit log."""
    host = request.client.host if request.client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "unknown"


def _token_id(presented: str) -> str:
    match = _TOKEN_ID.match(presented)
    return match.group(1) if match else "malformed"


async def caller(request: Request, app: StateDep) -> Caller:
    """The caller behind the Authorization header; anonymous without one.

    async, so anonymous reads (the hot path) never enter the thread pool; tokens are checked
    against the catalog in one pool call (writes were checked already, before their body).
    """
    state = request.scope.get("state", {})
    if _REFUSED in state:  # a write refused before its body was read (WritesAuthenticated)
        state[_RAISED] = True
        await run_in_threadpool(_refuse_write, request, app, state[_REFUSED])
    found: Caller | None = state.get(_CALLER)
    if found is not None:
        return found
    header = request.headers.get("authorization")
    if not header:
        return Caller(ANONYMOUS, None)
    return await run_in_threadpool(_authenticate, request, app, header)


def _authenticate(request: Request, app: AppState, header: str) -> Caller:
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    try:
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        with app.sessions() as session:
            found, stale = verify(session, presented)
    except Unauthorized:
        limiter: FailedAuthLimiter = request.app.state.auth_limiter
        limiter.fail(client_address(request), _token_id(presented))
        raise
    if stale:
        with transaction(app.sessions) as session:
            touch(session, found.actor.removeprefix("token:"))
    return found


class _NoBody:
    """A receive that ends the body at once (what follows is the wait for a disconnect)."""

    def __init__(self, receive: Receive) -> None:
        self._receive, self._ended = receive, False

    async def __call__(self) -> Message:
        if self._ended:
            return await self._receive()
        self._ended = True
        return {"type": "http.request", "body": b"", "more_body": False}


class _Refusing:
    """The send of a refused write: its answer closes the connection (the unread body is not
    worth reading), and a route that never asked ``caller`` cannot answer it with a success."""

    def __init__(self, scope: Scope, send: Send, refusal: RegistryError) -> None:
        self.scope, self.send, self.refusal = scope, send, refusal
        self.replaced = False

    async def __call__(self, message: Message) -> None:
        if self.replaced:
            return
        if message["type"] == "http.response.start":
            if message["status"] < 400 and not self.scope["state"].get(_RAISED):
                self.replaced = True
                exc = self.refusal
                answer = error_response(status_of(exc), exc.code, exc.message)
                answer.headers["Connection"] = "close"
                await answer(self.scope, _nothing, self.send)
                return
            message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
        await self.send(message)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


class WritesAuthenticated:
    """Plain ASGI middleware: a write's caller is known before a byte of its body is read.

    Every write needs a token. One without (or with a bad one) reaches its route with an empty
    body and its refusal in the scope: ``caller`` raises it there, where the route's name is
    known for the audit row, and the connection closes after the answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization")
        state = scope.setdefault("state", {})
        try:
            if not header:
                raise Unauthorized("writes need a token (Authorization: Bearer ...)")
            state[_CALLER] = await run_in_threadpool(
                _authenticate, request, request.app.state.registry, header
            )
        except RegistryError as exc:
            state[_REFUSED] = exc
            await self.app(scope, _NoBody(receive), _Refusing(scope, send, exc))
            return
        await self.app(scope, receive, send)


def refused_before_body(scope: Scope) -> bool:
    """Whether WritesAuthenticated refused this write (its body will never be read)."""
    return _REFUSED in scope.get("state", {})


def _refuse_write(request: Request, app: AppState, refusal: RegistryError) -> None:
    action = getattr(request.scope.get("route"), "name", None) or request.method
    refusals: AnonymousRefusals = request.app.state.anonymous_refusals
    refusals.record(
        app.sessions,
        refusal,
        action=action,
        target=request.url.path,
        address=client_address(request),
    )
    raise refusal


CallerDep = Annotated[Caller, Depends(caller)]


async def require_read(request: Request, app: StateDep, who: CallerDep) -> Caller:
    """Reads are open unless STANCE_ANONYMOUS_READ=false; then any valid token may read."""
    if who.scope is None and not app.settings.anonymous_read:
        raise Unauthorized("this registry does not allow anonymous reads: send a token")
    return who


def audit_refusals(request: Request, app: StateDep, who: CallerDep) -> Iterator[Caller]:
    """Wrap a write: if it is refused, the refusal lands in the audit log (own transaction)."""
    action = getattr(request.scope.get("route"), "name", None) or request.method
    with refusals_recorded(
        app.sessions, actor=who.actor, action=action, target=request.url.path[:_TARGET_CHARS]
    ):
        yield who


Reader = Annotated[Caller, Depends(require_read)]
Answer = Callable[[AppState, Caller], Awaitable[Response]]


class ReadRoute(APIRoute):
    """A hot read route past FastAPI's parameter and dependency machinery, which cost more
    than the lookup behind it. ``fast`` reads the request's parameters and returns what to
    answer once the read rule (``Reader``) has passed, or None for parameters that need the
    declared route (which words the 422)."""

    @staticmethod
    def fast(request: Request) -> Answer | None:
        raise NotImplementedError

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        declared = super().get_route_handler()

        async def handler(request: Request) -> Response:
            answer = self.fast(request)
            if answer is None:
                return await declared(request)
            app: AppState = request.app.state.registry
            return await answer(app, await require_read(request, app, await caller(request, app)))

        return handler


Writer = Annotated[Caller, Depends(audit_refusals, scope="function")]


def write_session(app: StateDep, _: Writer) -> Iterator[Session]:
    """A transaction committed after the handler; set up inside the refusal audit, so a refused
    write is rolled back before its refusal is recorded."""
    with transaction(app.sessions) as session:
        yield session


WriteSessionDep = Annotated[Session, Depends(write_session, scope="function")]
