"""How ``stance serve`` runs uvicorn: the request head bounded in size and time, no proxy trusted.

uvicorn's httptools protocol (the fast one: h11 serves resolve at ~40% of its rate here) puts
no limit on a request head and no deadline on it: a 64 MiB header was accepted, and a client
dribbling a header a byte a second kept its connection, and a worker slot, for as long as it
liked. ``BoundedHttpToolsProtocol`` adds both: a head larger than ``max_header_bytes`` is
answered 431, one (or a first request) that takes longer than ``header_timeout`` seconds is
answered 408; either way the connection closes. Idle keep-alive connections close after
``keep_alive_timeout`` (uvicorn's own timer). Bodies are bounded in the app
(``registry.api.limits``), proxies in ``registry.api.security``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from registry.settings import Settings


@functools.cache
def _limits() -> tuple[int, float]:
    """This process's head limits: each worker reads the settings once, from the environment."""
    settings = Settings()
    return settings.max_header_bytes, settings.header_timeout


def _refusal(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size limit and a deadline on every request head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes, self.head_timeout = _limits()
        self._in_head = True  # waiting for (the rest of) a request head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)  # counted once parsed: body bytes never count
            if self._head_bytes > self.max_head_bytes:
                self._refuse(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(b"408 Request Timeout")

    def _refuse(self, status: bytes) -> None:
        self._disarm()
        if self.cycle is None or self.cycle.response_complete:  # never inside another answer
            self.transport.write(_refusal(status))
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn.Config options for ``settings`` (the limits above; proxies are the app's)."""
    return {
        "http": BoundedHttpToolsProtocol,
        "timeout_keep_alive": settings.keep_alive_timeout,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; the app applies
        # STANCE_TRUSTED_PROXIES itself (registry.api.security), empty unless configured.
        "proxy_headers": False,
        "server_header": False,
    }
