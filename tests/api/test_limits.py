"""Floods and stalls against a real ``stance serve``: bodies, heads, slow clients, upload quotas.

Each refusal is a 4xx with the JSON error (or, for a head the server will not parse, a bare
431 / 408) and leaves catalog and store as they were; the server's own memory (VmRSS of the
real process) stays flat around a 200 MiB body.
"""

from __future__ import annotations

import hashlib
import select
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx

from registry.embedded import EmbeddedRegistry
from registry.settings import Settings
from tests.api.conftest import Server, bearer
from tests.api.raw import exchange, request_head, rss_bytes
from tests.conftest import snapshot

MiB = 1024 * 1024
FLOOD = 200 * MiB
COMMIT = "/v1/adapters/default/role/versions"
TOKENS = ("tokens",)  # a refused request still records that its token was used


def _flood(chunked: bool) -> Iterator[bytes]:
    piece = b" " * (64 * 1024)
    for _ in range(FLOOD // len(piece)):
        yield b"10000\r\n" + piece + b"\r\n" if chunked else piece


def _post(port: int, token: str | None, *, chunked: bool) -> tuple[int | None, str, int]:
    headers = {"Content-Type": "application/json"}
    headers |= {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(FLOOD)}
    if token:
        headers |= bearer(token)
    answer = exchange(port, request_head("POST", COMMIT, headers), _flood(chunked))
    return answer.status, answer.json()["code"] if answer.body else "", answer.sent


def test_oversized_bodies_and_heads_never_reach_memory(
    serve: Callable[..., Server], operator: EmbeddedRegistry, settings: Settings
) -> None:
    publisher = operator.create_token("publish").token
    server = serve()
    httpx.get(f"{server.url}/v1/health", headers=bearer(publisher))  # token now "used"
    before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
    rss = rss_bytes(server.process.pid)

    # Anonymous: refused before a byte of the body is read, declared or chunked.
    for chunked in (False, True):
        status, code, sent = _post(server.port, None, chunked=chunked)
        assert (status, code) == (401, "unauthorized")
        assert sent < FLOOD // 2  # the server hung up instead of reading on
    # A publisher: a declared 200 MiB is refused unread, a chunked one once past 1 MiB.
    for chunked in (False, True):
        status, code, sent = _post(server.port, publisher, chunked=chunked)
        assert (status, code) == (413, "too_large")
        assert sent < FLOOD // 2
    # A 64 MiB header: refused once past the head limit, the connection closed.
    big = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: "
    head = exchange(server.port, big, (b"a" * MiB for _ in range(64)))
    assert head.status == 431 and head.sent < 32 * MiB

    grown = rss_bytes(server.process.pid) - rss
    assert grown < 32 * MiB, f"server memory grew by {grown / MiB:.0f} MiB"
    assert snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS) == before
    assert httpx.get(f"{server.url}/v1/health").status_code == 200  # and it still serves


def test_slow_clients_are_cut_off(
    serve: Callable[..., Server], operator: EmbeddedRegistry, settings: Settings
) -> None:
    publisher = operator.create_token("publish").token
    server = serve(
        STANCE_HEADER_TIMEOUT="1",
        STANCE_BODY_TIMEOUT="1",
        STANCE_BODY_MIN_RATE="1024",
    )
    before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
    # A head dribbled a byte every 0.2 s, and a connection that never says anything.
    start = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: "
    dribble = exchange(server.port, start, (b"x" for _ in range(200)), pace=0.2, timeout=20)
    silent = exchange(server.port, b"", timeout=20)
    for answer in (dribble, silent):
        assert answer.status == 408 and answer.seconds < 10, answer
    # A body sent a byte every 0.2 s (5 bytes/s, under the 1024 bytes/s floor).
    headers = {"Content-Type": "application/json", "Content-Length": "200", **bearer(publisher)}
    body = exchange(
        server.port,
        request_head("POST", COMMIT, headers),
        (b" " for _ in range(200)),
        pace=0.2,
        timeout=20,
    )
    assert body.status == 408 and body.json()["code"] == "timeout", body
    assert body.seconds < 10
    assert snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS) == before


def _blob(seed: int, size: int) -> tuple[str, bytes]:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32)
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _stored(settings: Settings, digest: str) -> bool:
    hexdigest = digest.removeprefix("sha256:")
    return (
        settings.home / "blobs" / "sha256" / hexdigest[:2] / hexdigest[2:4] / hexdigest
    ).exists()


def _until(
    answer: Callable[[], httpx.Response], status: int, seconds: float = 60
) -> httpx.Response:
    """Ask again until the server answers ``status`` (polling a state, not sleeping on a race)."""
    deadline = time.monotonic() + seconds
    while True:
        got = answer()
        if got.status_code == status or time.monotonic() > deadline:
            return got


def test_uploads_are_bounded_per_token(
    serve: Callable[..., Server], operator: EmbeddedRegistry, settings: Settings
) -> None:
    publisher = operator.create_token("publish").token
    other = operator.create_token("publish").token
    server = serve(
        STANCE_MAX_CONCURRENT_UPLOADS="2",
        STANCE_UPLOAD_QUOTA_BYTES=str(150_000),
        STANCE_BODY_TIMEOUT="60",
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:

        def put(token: str, digest: str, data: bytes) -> httpx.Response:
            return client.put(f"/v1/blobs/{digest}", content=data, headers=bearer(token))

        first, second = _blob(1, 100_000), _blob(2, 100_000)
        assert put(publisher, *first).status_code == 201
        over = put(publisher, *second)
        assert over.status_code == 413 and over.json()["code"] == "too_large"
        assert "quota" in over.json()["message"] and not _stored(settings, second[0])
        assert put(other, *second).status_code == 201  # quotas are per token
        # gc sweeps uploads no version took: the quota is free again.
        collected = operator.collect_garbage(grace=timedelta(0))
        assert collected.upload_rows == 2
        assert put(publisher, *second).status_code == 201

        # Two stalled uploads hold the token's two slots; a third is refused, others' are not.
        small = _blob(3, 1024)
        length = {"Content-Length": str(len(small[1])), **bearer(publisher)}
        head = request_head("PUT", f"/v1/blobs/{small[0]}", length)

        def stall() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(head + small[1][:100])
            return sock

        stalled = [stall(), stall()]
        try:
            deadline = time.monotonic() + 60
            while True:
                # A stalled upload that arrived while a probe held a slot was refused: again.
                answered, _, _ = select.select(stalled, [], [], 0)
                for sock in answered:
                    sock.close()
                    stalled[stalled.index(sock)] = stall()
                # Until both are inside the handler, a wrong body is answered 400.
                refused = put(publisher, small[0], b"wrong bytes")
                if refused.status_code == 429 or time.monotonic() > deadline:
                    break
            assert refused.json()["code"] == "rate_limited", refused.text
            assert put(other, *small).status_code == 201
        finally:
            for sock in stalled:
                sock.close()
        # The slots come back once the stalled connections are gone.
        assert _until(lambda: put(publisher, *small), 201).status_code == 201
    assert not list((settings.home / "blobs").rglob(".incoming-*"))  # nothing half-written
