"""Streamed HTTP bodies as read-only files, and the one table from httpx's errors to ours."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, cast

import httpx

from registry.errors import IntegrityError, RegistryError, Unreachable
from registry.manifest import CHUNK


@contextmanager
def transport_errors(what: str) -> Iterator[None]:
    """httpx's transport failures (refused, reset, timed out, cut short) become Unreachable."""
    try:
        yield
    except httpx.TransportError as exc:
        raise Unreachable(f"{what} ({exc})") from exc


class _Body:
    """A streamed response body as a read-only binary file (what the cache reads from)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.iter_bytes(CHUNK)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        # Parts joined once: appending to one bytes object copied it per chunk (quadratic).
        parts, have = [self._buffer], len(self._buffer)
        while size < 0 or have < size:
            try:
                chunk = next(self._chunks, None)
            except httpx.HTTPError as exc:  # cut short, or more/less than Content-Length
                raise Unreachable(f"download from {self._response.url} broke off: {exc}") from exc
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size < 0 or have <= size:
            self._buffer = b""
            return data
        self._buffer = data[size:]
        return data[:size]

    def skip(self, count: int) -> None:
        """Drop ``count`` bytes a chunk at a time (never ``count`` bytes in memory at once)."""
        while count > 0 and (chunk := self.read(min(CHUNK, count))):
            count -= len(chunk)

    @property
    def closed(self) -> bool:
        return self._response.is_closed

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_length(response: httpx.Response, expected: int) -> None:
    announced = response.headers.get("content-length")
    if response.headers.get("content-encoding", "identity") != "identity":
        return  # a proxy compressed it: the length is of other bytes (the cache still counts)
    if announced is not None and announced.strip() != str(expected):
        response.close()
        raise IntegrityError(
            f"{response.url} announces Content-Length {announced[:40]}, "
            f"but {expected} bytes were declared"
        )


def open_stream(
    http: httpx.Client,
    url: str,
    *,
    start: int = 0,
    size: int | None = None,
    headers: dict[str, str] | None = None,
    unreachable: str,
    fail: Callable[[httpx.Response], RegistryError],
) -> BinaryIO:
    """A streamed GET of ``url`` from byte ``start`` (an HTTP Range), as a read-only file.

    ``fail`` turns an error response (read and closed) into the error to raise; a server that
    ignores the Range is skipped ahead, so the caller always gets bytes from ``start`` on. With
    ``size`` (the whole blob's declared size) a Content-Length announcing other than that is
    refused before a byte of the body is read.
    """
    wanted = {**(headers or {}), **({"Range": f"bytes={start}-"} if start else {})}
    with transport_errors(unreachable):
        response = http.send(http.build_request("GET", url, headers=wanted), stream=True)
    if response.status_code >= 400:
        response.read()
        response.close()
        raise fail(response)
    if size is not None:
        _check_length(response, size - start if response.status_code == 206 else size)
    body = _Body(response)
    if start and response.status_code == 200:
        body.skip(start)
    return cast(BinaryIO, body)
