"""What every answer carries and who the client is: security headers, trusted proxies, and the
API description behind the read rule.

- Every response says ``X-Content-Type-Options: nosniff`` (a blob is never sniffed into HTML),
  ``X-Frame-Options: DENY`` and a Content-Security-Policy: pages load only their own scripts,
  styles and images; the API docs (Swagger UI, ReDoc) also need their inline bootstrap script.
- ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed only from ``trusted_proxies``
  (empty by default, so the TCP peer is the client); ``stance serve`` turns uvicorn's own
  proxy handling off, which would trust 127.0.0.1.
- With ``anonymous_read`` off, ``/openapi.json``, ``/docs``, ``/redoc`` and ``/metrics`` need
  a read token, as every other read does (FastAPI and ``registry.api.metrics`` serve them
  outside the routers that apply the read rule).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from registry.api.auth import caller, require_read
from registry.api.errors import error_response, status_of
from registry.errors import RegistryError
from registry.settings import Settings

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# Swagger UI and ReDoc start from an inline script and style themselves inline; ReDoc runs a
# worker from a blob: URL. Nothing is loaded from elsewhere (registry.api.docs serves them).
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
GUARDED = DOCS_PATHS | {"/openapi.json", "/metrics"}


def _headers(policy: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", policy.encode()),
        (b"referrer-policy", b"same-origin"),
    ]


PAGE_HEADERS, DOCS_HEADERS = _headers(PAGE_POLICY), _headers(DOCS_POLICY)


class SecurityHeaders:
    """Plain ASGI middleware: the headers above on every response (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = DOCS_HEADERS if scope["path"] in DOCS_PATHS else PAGE_HEADERS

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k, v) for k, v in extra if k not in present]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, with_headers)


class ReadGate:
    """The schema, the docs and the metrics follow the read rule like every other read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in GUARDED:
            request = Request(scope)
            state = request.app.state.registry
            try:
                await require_read(request, state, await caller(request, state))
            except RegistryError as exc:
                response = error_response(status_of(exc), exc.code, exc.message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the middleware; call it last, so the headers cover every other layer's answers."""
    if not settings.anonymous_read:
        app.add_middleware(ReadGate)
    app.add_middleware(SecurityHeaders)
    if settings.trusted_proxies:  # outermost: every layer below sees the real client
        app.add_middleware(
            ProxyHeadersMiddleware,  # type: ignore[arg-type]
            trusted_hosts=settings.trusted_proxies,
        )
