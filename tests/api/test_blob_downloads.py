"""GET /v1/blobs at every size a download takes its own path for (issue 19), on both catalog
lookups: the whole body, Range, 304, HEAD and the refusals, byte for byte; the SQLite lookup
really skips SQLAlchemy; a client that leaves mid-stream gets the blob's file closed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from starlette.types import Message

from registry.api import blobs, create_app
from registry.embedded import EmbeddedRegistry
from registry.manifest import CHUNK
from registry.settings import Settings
from registry.stores import blob_key
from tests.factories import make_adapter, tiny_llama

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Adapters whose weights fall in each download path: read on the event loop, read in one
    worker-thread call, streamed chunk by chunk."""
    root = tmp_path_factory.mktemp("downloads")
    found = {
        "inline": make_adapter(root / "inline", r=8),
        "one-read": make_adapter(root / "one-read", r=32),
        "streamed": make_adapter(root / "streamed", r=96, model=tiny_llama(hidden=512)),
    }
    sizes = {name: (folder / WEIGHTS).stat().st_size for name, folder in found.items()}
    assert sizes["inline"] <= blobs.INLINE < sizes["one-read"] <= CHUNK, sizes
    assert sizes["streamed"] > 2 * CHUNK, sizes  # a first chunk, a middle one and a tail
    return found


@pytest.fixture
def published(settings: Settings, folders: dict[str, Path]) -> dict[str, tuple[str, bytes]]:
    """Each size's weights published: name -> (digest, bytes)."""
    out = {}
    with EmbeddedRegistry(settings) as registry:
        for name, folder in folders.items():
            registry.publish(folder, f"{name}@1.0.0")
            weights = next(f for f in registry.resolve(f"{name}@1.0.0").files if f.path == WEIGHTS)
            out[name] = (weights.digest, (folder / WEIGHTS).read_bytes())
    return out


# Each catalog lookup: on SQLite the direct one and the full path, on PostgreSQL the full one.
each_lookup = pytest.mark.parametrize(
    ("catalog_url", "lookup"),
    [("sqlite", "direct"), ("sqlite", "full"), ("postgresql", "full")],
    indirect=["catalog_url"],
)


@pytest.fixture
def client(lookup: str, settings: Settings) -> Iterator[TestClient]:
    """The app answering through ``lookup`` (the tests parametrize it with ``each_lookup``)."""
    app = create_app(settings)
    state = app.state.registry
    # The direct lookup exists on SQLite only: else the fast path would go untested.
    assert (state.direct is not None) == settings.catalog_url.startswith("sqlite")
    if lookup == "full":
        state.direct = None
    with TestClient(app) as test_client:
        yield test_client


def _ranges(size: int) -> list[tuple[str, int, int]]:
    """(Range header, first byte, last byte) across the chunk boundaries a body may have."""
    cuts = [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=-7", size - 7, size - 1),
        (f"bytes={size - 3}-", size - 3, size - 1),
        (f"bytes=5-{size * 2}", 5, size - 1),  # the end past the blob: clipped
    ]
    if size > 2 * CHUNK:
        cuts += [
            (f"bytes={CHUNK - 5}-{CHUNK + 4}", CHUNK - 5, CHUNK + 4),
            (f"bytes=1-{2 * CHUNK + 1}", 1, 2 * CHUNK + 1),
            (f"bytes={CHUNK}-", CHUNK, size - 1),
        ]
    return cuts


@each_lookup
def test_every_size_answers_bytes_range_and_304(
    client: TestClient, published: dict[str, tuple[str, bytes]]
) -> None:
    for name, (digest, data) in published.items():
        url, size = f"/v1/blobs/{digest}", len(data)
        full = client.get(url)
        assert full.status_code == 200 and full.content == data, name
        assert full.headers["content-length"] == str(size)
        assert full.headers["etag"] == f'"{digest}"'
        assert full.headers["cache-control"] == blobs.IMMUTABLE
        assert full.headers["accept-ranges"] == "bytes"
        assert full.headers["content-type"] == "application/octet-stream"
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(size)
        for header, first, last in _ranges(size):
            part = client.get(url, headers={"Range": header})
            assert part.status_code == 206, (name, header)
            assert part.content == data[first : last + 1], (name, header)
            assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
            assert part.headers["content-length"] == str(last - first + 1)
        # Several ranges, or one we do not read: RFC 9110 lets us send it all.
        assert client.get(url, headers={"Range": "bytes=0-1,5-6"}).content == data
        cached = client.get(url, headers={"If-None-Match": f'"other", "{digest}"'})
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["etag"] == f'"{digest}"' and "content-length" not in cached.headers
        beyond = client.get(url, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416 and beyond.json()["code"] == "range_not_satisfiable"
        assert beyond.headers["content-range"] == f"bytes */{size}"


@each_lookup
def test_unknown_and_malformed_digests_are_refused(
    client: TestClient, published: dict[str, tuple[str, bytes]]
) -> None:
    unknown = client.get("/v1/blobs/sha256:" + "0" * 64)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    assert client.head("/v1/blobs/sha256:" + "0" * 64).status_code == 404
    for bad in ("sha256:zz", "md5:" + "0" * 32, "sha256:" + "A" * 64):
        answer = client.get(f"/v1/blobs/{bad}")
        assert answer.status_code == 400 and answer.json()["code"] == "bad_spec", bad


def test_reads_need_a_token_where_anonymous_reads_are_off(
    settings: Settings, published: dict[str, tuple[str, bytes]]
) -> None:
    closed = settings.model_copy(update={"anonymous_read": False})
    digest, _ = published["inline"]
    with TestClient(create_app(closed)) as client:
        answer = client.get(f"/v1/blobs/{digest}")
        assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
        forged = client.get(f"/v1/blobs/{digest}", headers={"Authorization": "Bearer x"})
        assert forged.status_code == 401


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_sqlite_downloads_skip_sqlalchemy(
    settings: Settings, published: dict[str, tuple[str, bytes]]
) -> None:
    app = create_app(settings)
    statements: list[str] = []
    event.listen(app.state.registry.engine, "before_cursor_execute", _recorder(statements))
    with TestClient(app) as client:
        for digest, data in published.values():
            assert client.get(f"/v1/blobs/{digest}").content == data
            assert client.head(f"/v1/blobs/{digest}").status_code == 200
    assert statements == []


def _recorder(statements: list[str]) -> Any:
    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    return record


def _open_paths() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
    return found


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_client_leaving_mid_stream_closes_the_file(
    settings: Settings, published: dict[str, tuple[str, bytes]]
) -> None:
    """Driven as uvicorn drives it (ASGI spec 2.3: sends after a disconnect are dropped, the
    disconnect arrives on receive), so the answer ends by cancellation mid-body."""
    app = create_app(settings)
    digest, data = published["streamed"]
    path = str((settings.home / "blobs" / blob_key(digest)).resolve())
    seen: list[Message] = []
    open_mid_stream: list[bool] = []

    async def download() -> None:
        gone = asyncio.Event()

        async def receive() -> Message:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            seen.append(message)
            if message["type"] == "http.response.body" and not gone.is_set():
                open_mid_stream.append(path in _open_paths())
                gone.set()  # the client goes after the first chunk
            await asyncio.sleep(0)  # a real send yields to the loop too

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/v1/blobs/{digest}",
            "raw_path": f"/v1/blobs/{digest}".encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        async with app.router.lifespan_context(app):  # closes the catalog after
            await app(scope, receive, send)

    asyncio.run(download())
    assert seen[0]["type"] == "http.response.start" and seen[0]["status"] == 200
    assert open_mid_stream == [True]
    bodies = [m for m in seen if m["type"] == "http.response.body"]
    assert sum(len(m["body"]) for m in bodies) < len(data)  # it really stopped mid-way
    assert path not in _open_paths()


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_stance_serve_streams_a_large_blob(
    serve: Any, published: dict[str, tuple[str, bytes]]
) -> None:
    server = serve("--no-access-log")
    digest, data = published["streamed"]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        full = http.get(f"/v1/blobs/{digest}")
        assert full.status_code == 200 and full.content == data
        middle = http.get(f"/v1/blobs/{digest}", headers={"Range": f"bytes={CHUNK - 1}-{CHUNK}"})
        assert middle.status_code == 206 and middle.content == data[CHUNK - 1 : CHUNK + 1]
