"""Streamed bodies against a real HTTP server that ignores Range (Python's own http.server)."""

from __future__ import annotations

import functools
import os
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from registry.errors import NotFound
from registry.manifest import CHUNK
from registry.transfer.http import open_stream

SIZE = 12 * CHUNK + 12_345


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def blob(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    data = os.urandom(SIZE)
    (tmp_path / "blob").write_bytes(data)
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/blob", data
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _open(http: httpx.Client, url: str, start: int = 0):  # noqa: ANN202
    return open_stream(
        http, url, start=start, size=SIZE, unreachable="test server",
        fail=lambda r: NotFound(f"HTTP {r.status_code}"),
    )  # fmt: skip


def test_reads_of_any_size_return_the_bytes_in_order(blob: tuple[str, bytes]) -> None:
    url, data = blob
    with httpx.Client() as http, _open(http, url) as body:
        got = [body.read(7), body.read(3 * CHUNK + 1), body.read(CHUNK), body.read()]
        assert body.read(5) == b""
    assert [len(part) for part in got] == [7, 3 * CHUNK + 1, CHUNK, SIZE - 4 * CHUNK - 8]
    assert b"".join(got) == data


def test_a_server_ignoring_range_is_skipped_ahead_a_chunk_at_a_time(
    blob: tuple[str, bytes],
) -> None:
    """http.server answers 200 with the whole file to a Range request: the bytes before
    ``start`` are dropped as they arrive, never held in memory all at once."""
    url, data = blob
    start = 10 * CHUNK + 99
    with httpx.Client() as http:
        tracemalloc.start()
        try:
            body = _open(http, url, start)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        with body:
            assert body.read() == data[start:]
    assert peak < 6 * CHUNK  # the skipped 10 MiB never sat in memory together (a few chunks)
