"""Content-addressed blob transfer: verified uploads, immutable cached downloads with Range."""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from registry.access import Caller, Scope
from registry.api.auth import Reader, Writer
from registry.api.deps import AppState, SessionDep, StateDep
from registry.catalog import queries, quotas
from registry.catalog.db import transaction
from registry.errors import IntegrityError, RangeNotSatisfiable, RateLimited, TooLarge
from registry.manifest import CHUNK, StreamDigest
from registry.spec import validate_digest

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])
IMMUTABLE = "public, max-age=31536000, immutable"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Request bodies above this go to disk while they are hashed.
SPOOL = 1024 * 1024


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


def _stream(source: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    with source:
        if start:
            if source.seekable():
                source.seek(start)
            else:
                skip = start
                while skip:
                    skip -= len(source.read(min(CHUNK, skip)))
        left = length
        while left > 0 and (chunk := source.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


@router.head("/{digest}")
def head_blob(_: Reader, session: SessionDep, digest: str) -> Response:
    size = queries.blob_size(session, digest)
    return Response(status_code=200, headers=_headers(digest, size))


@router.get(
    "/{digest}",
    response_class=StreamingResponse,
    responses={206: {"description": "partial content"}, 304: {"description": "not modified"}},
)
def get_blob(
    app: StateDep,
    _: Reader,
    session: SessionDep,
    digest: str,
    range_: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The blob's bytes; ETag is the digest, so caches may keep it forever."""
    size = queries.blob_size(session, digest)
    headers = _headers(digest, size)
    if if_none_match and digest in {t.strip().strip('"') for t in if_none_match.split(",")}:
        headers.pop("Content-Length")
        return Response(status_code=304, headers=headers)
    span = _range(range_, size)
    source = app.store.open(digest)
    if span is None:
        return StreamingResponse(
            _stream(source, 0, size), headers=headers, media_type="application/octet-stream"
        )
    start, end = span
    headers["Content-Length"] = str(end - start + 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        _stream(source, start, end - start + 1),
        status_code=206,
        headers=headers,
        media_type="application/octet-stream",
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
