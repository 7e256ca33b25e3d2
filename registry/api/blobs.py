"""Content-addressed blob transfer: verified uploads, immutable cached downloads with Range."""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Annotated, BinaryIO

from fastapi import APIRouter, FastAPI, Header, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from registry.access import Caller, Scope
from registry.api.auth import Answer, Reader, ReadRoute, Writer
from registry.api.deps import AppState, StateDep
from registry.catalog import queries, quotas
from registry.catalog.db import transaction
from registry.errors import IntegrityError, RangeNotSatisfiable, RateLimited, TooLarge
from registry.manifest import CHUNK, StreamDigest
from registry.spec import validate_digest
from registry.stores import Store
from registry.stores.local import LocalStore

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])
IMMUTABLE = "public, max-age=31536000, immutable"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Request bodies above this go to disk while they are hashed.
SPOOL = 1024 * 1024
OCTETS = "application/octet-stream"
# Blobs up to this size in a local store are read on the event loop (configs, cards).
INLINE = 64 * 1024


def _headers(digest: str, size: int) -> dict[str, str]:
    return {
        "ETag": f'"{digest}"',
        "Cache-Control": IMMUTABLE,
        "Accept-Ranges": "bytes",
        "Content-Length": str(size),
    }


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single satisfiable ``bytes=`` range as (start, end inclusive); None means whole body."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None  # absent, multi-range or malformed: RFC 9110 lets us send it all
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"blob has {size} bytes", size=size)
    return start, end


async def _size(app: AppState, digest: str) -> int:
    """The catalog's size of ``digest``. On SQLite one indexed lookup runs right here on the
    event loop, as resolve's does (it never waits for a lock, and the hop to a worker thread
    costs more); otherwise, or when it finds nothing, the full path in a worker thread."""
    validate_digest(digest)
    size = app.direct.blob_size(digest) if app.direct is not None else None
    if size is None:
        size = await run_in_threadpool(_catalog_size, app, digest)
    return size


def _catalog_size(app: AppState, digest: str) -> int:
    with app.engine.connect() as conn:  # one query: a Session around it would cost as much
        return queries.blob_size(conn, digest)


def _body(
    store: Store, digest: str, start: int, length: int, status: int, headers: dict[str, str]
) -> Response:
    """The store's bytes: a small blob whole, as one write; a large one as its first chunk
    and a stream of the rest."""
    source = store.open(digest, start)
    try:
        first = source.read(min(CHUNK, length))  # stores read short only at the end
    except BaseException:
        source.close()
        raise
    if length <= CHUNK:
        source.close()
        return Response(first, status, headers, media_type=OCTETS)
    return _BlobStream(source, first, length, status, headers)


class _BlobStream(StreamingResponse):
    """The rest of a large blob, a CHUNK per worker-thread read; the store's stream closes
    however the answer ends: sent in full, failed, or the client gone mid-way."""

    def __init__(
        self, source: BinaryIO, first: bytes, length: int, status: int, headers: dict[str, str]
    ) -> None:
        self.source = source
        super().__init__(self._chunks(first, length), status, headers, media_type=OCTETS)

    async def _chunks(self, chunk: bytes, left: int) -> AsyncIterator[bytes]:
        while chunk:
            left -= len(chunk)
            yield chunk
            if left <= 0:
                return
            chunk = await run_in_threadpool(self.source.read, min(CHUNK, left))

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A cancelled read has finished by now: anyio waits for the thread, never abandons it.
            self.source.close()


@router.head("/{digest}")
async def head_blob(app: StateDep, _: Reader, digest: str) -> Response:
    size = await _size(app, digest)
    return Response(status_code=200, headers=_headers(digest, size))


class _DownloadRoute(ReadRoute):
    """Downloads answer without FastAPI's machinery: their parameters (the path's digest, two
    optional headers) cannot fail validation."""

    @staticmethod
    def fast(request: Request) -> Answer:
        digest, headers = request.path_params["digest"], request.headers
        range_, etag = headers.get("range"), headers.get("if-none-match")
        return lambda app, who: get_blob(app, who, digest, range_, etag)


async def get_blob(
    app: StateDep,
    _: Reader,
    digest: str,
    range_: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The blob's bytes; ETag is the digest, so caches may keep it forever."""
    size = await _size(app, digest)
    headers = _headers(digest, size)
    if if_none_match and digest in {t.strip().strip('"') for t in if_none_match.split(",")}:
        headers.pop("Content-Length")
        return Response(status_code=304, headers=headers)
    status, start, length = 200, 0, size
    span = _range(range_, size)
    if span is not None:
        start, end = span
        status, length = 206, end - start + 1
        headers["Content-Length"] = str(length)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    body = partial(_body, app.store, digest, start, length, status, headers)
    if length <= INLINE and isinstance(app.store, LocalStore):
        return body()  # a few KiB, page-cached when hot: less than the hop to a thread
    return await run_in_threadpool(body)


def install(app: FastAPI) -> None:
    """Route downloads on the app itself, ahead of the included routers (as resolve is):
    FastAPI matches a request against every route before its own, twice inside a router."""
    app.router.add_api_route(
        f"{router.prefix}/{{digest}}",
        get_blob,
        methods=["GET"],
        tags=["blobs"],
        response_class=StreamingResponse,
        responses={206: {"description": "partial content"}, 304: {"description": "not modified"}},
        route_class_override=_DownloadRoute,
    )


class UploadSlots:
    """Blob uploads in flight per token in this process: a token holds at most ``limit``, so
    stalled uploads cannot pin the server's memory and connections (429 beyond)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy: Counter[str] = Counter()

    @contextmanager
    def take(self, actor: str) -> Iterator[None]:
        # Only the event loop's thread calls this: no lock needed.
        if self._busy[actor] >= self.limit:
            raise RateLimited(
                f"{actor} already has {self.limit} uploads in flight; retry when one finishes"
            )
        self._busy[actor] += 1
        try:
            yield
        finally:
            self._busy[actor] -= 1
            if not self._busy[actor]:
                del self._busy[actor]


def _allowance(app: AppState, who: Caller) -> int:
    with app.sessions() as session:
        left = quotas.upload_allowance(session, who, quota=app.settings.upload_quota_bytes)
    return min(left, app.settings.max_blob_bytes)


def _over(app: AppState, who: Caller, limit: int) -> TooLarge:
    if limit < app.settings.max_blob_bytes:
        return TooLarge(
            f"{who.actor} has uploaded blobs no version uses yet; its quota of "
            f"{app.settings.upload_quota_bytes} uncommitted bytes leaves {limit}: commit them, "
            "or wait for `stance gc` to sweep them"
        )
    return TooLarge(f"blobs are limited to {limit} bytes")


def _stored(app: AppState, who: Caller, digest: str, spool: BinaryIO, size: int) -> None:
    app.store.put(digest, spool)
    with transaction(app.sessions) as session:
        quotas.record_upload(session, who, digest, size)


@router.put(
    "/{digest}",
    status_code=201,
    responses={413: {"description": "too large, or over the token's upload quota"}},
    name="blob.upload",
)
async def put_blob(app: StateDep, who: Writer, digest: str, request: Request) -> Response:
    """Upload a blob; its bytes are hashed while they arrive and refused if they differ.

    The answer depends only on the bytes sent: a blob already stored is read and verified like
    any other and answered 201, so no caller learns what other tenants uploaded (only someone
    holding the very bytes could ask, and they are hashed in full first).
    """
    who.authorize(Scope.PUBLISH)
    validate_digest(digest)
    slots: UploadSlots = request.app.state.upload_slots
    with slots.take(who.actor):
        limit = await run_in_threadpool(_allowance, app, who)
        declared = request.headers.get("content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _over(app, who, limit)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL) as spool:
            seen = StreamDigest()
            try:
                async for chunk in request.stream():
                    seen.update(chunk)
                    if seen.size > limit:
                        raise _over(app, who, limit)
                    spool.write(chunk)
            except ClientDisconnect:  # the uploader went away: nobody to answer, nothing kept
                return Response(status_code=400)
            if seen.digest != digest:
                raise IntegrityError(f"uploaded bytes hash to {seen.digest}, not {digest}")
            spool.seek(0)
            await run_in_threadpool(_stored, app, who, digest, spool, seen.size)  # type: ignore[arg-type]
    return Response(status_code=201, headers={"ETag": f'"{digest}"'})
