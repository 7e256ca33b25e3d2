"""Bounds on request bodies, enforced before anything reads them: size per route, and time.

A body may hold at most ``max_json_bytes`` (``max_blob_bytes`` for a blob upload): a larger
Content-Length is refused before the application runs, and a body without one is cut off as it
streams past the limit. It must also arrive in time: ``body_timeout`` seconds of grace, then on
average ``body_min_rate`` bytes a second (a 1-byte-a-second upload cannot hold a worker, a slow
honest link still can upload gigabytes). Limits on the request head (its size, the time it
may take) are the protocol's: ``registry.api.server``.

Whatever the application makes of a body cut short, the answer is the refusal (413 or 408,
``Connection: close``): FastAPI would turn any error while reading a JSON body into a 400.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.api.auth import refused_before_body
from registry.api.errors import error_response, status_of
from registry.errors import RegistryError, TimedOut, TooLarge
from registry.settings import Settings

BLOB_UPLOAD = "/v1/blobs/"


class _Body:
    """One request's body as the application receives it, counted and timed."""

    def __init__(self, receive: Receive, limit: int, settings: Settings) -> None:
        self._receive, self.limit = receive, limit
        self.grace, self.rate = settings.body_timeout, settings.body_min_rate
        self.start, self.seen, self.done = time.monotonic(), 0, False
        self.refusal: RegistryError | None = None

    async def receive(self) -> Message:
        if self.done:  # the body is in: what follows is the wait for a disconnect
            return await self._receive()
        left = self.start + self.grace + self.seen / self.rate - time.monotonic()
        try:
            message = await asyncio.wait_for(self._receive(), timeout=max(left, 0.0))
        except TimeoutError:
            raise self._refuse(
                TimedOut(
                    f"the request body did not arrive in time ({self.seen} bytes in "
                    f"{time.monotonic() - self.start:.0f} s)"
                )
            ) from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise self._refuse(TooLarge(f"this request body is limited to {self.limit} bytes"))
            self.done = not message.get("more_body", False)
        return message

    def _refuse(self, exc: RegistryError) -> RegistryError:
        self.refusal = exc
        return exc


class BodyLimits:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware on the hot paths)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    def _limit(self, scope: Scope) -> int:
        if scope["method"] == "PUT" and scope["path"].startswith(BLOB_UPLOAD):
            return self.settings.max_blob_bytes
        return self.settings.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or refused_before_body(scope):
            await self.app(scope, receive, send)
            return
        declared, framed = _framing(scope)
        if declared is None and not framed:  # no body at all (every plain GET): nothing to bound
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        if declared is not None and declared > limit:
            refusal = TooLarge(f"this request body is limited to {limit} bytes, not {declared}")
            await _answer(refusal, scope, receive, send)
            return
        body = _Body(receive, limit, self.settings)
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if body.refusal is not None and not started:  # the refusal is the answer
                started = True
                await _answer(body.refusal, scope, receive, send)
                return
            if body.refusal is None:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, body.receive, guarded_send)
        except RegistryError as exc:
            if exc is not body.refusal or started:
                raise
            await _answer(exc, scope, receive, send)


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length, and whether the request has a body of any kind."""
    declared, framed = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            framed = True
            declared = int(value) if value.isdigit() else None  # the server refuses a bad one
        elif name == b"transfer-encoding":
            framed = True
    return declared, framed


async def _answer(exc: RegistryError, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(status_of(exc), exc.code, exc.message)
    response.headers["Connection"] = "close"  # the rest of the body is not worth reading
    await response(scope, receive, send)


def install(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(BodyLimits, settings=settings)  # type: ignore[arg-type]
