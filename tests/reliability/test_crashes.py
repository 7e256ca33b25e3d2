"""Faults mid-publish: publishers SIGKILLed at seeded random points, a server killed mid-upload.
Afterwards the catalog is sound, every version's blobs exist and verify, publishing works."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from registry.embedded import EmbeddedRegistry
from registry.errors import NotFound
from registry.lora.format import WEIGHTS
from registry.remote import RemoteRegistry
from registry.settings import Settings
from tests.api.conftest import Server, bearer
from tests.reliability.conftest import Workers, with_weights_scaled, worker_settings

KILLS = 20
TIMED = 3
SEED = 14


def _sound(registry: EmbeddedRegistry) -> None:
    """The database's own checks (SQLite), then every version's blobs re-hashed."""
    if registry.engine.dialect.name == "sqlite":
        with registry.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    found = registry.verify_store()
    assert found.ok, found


def _state(registry: EmbeddedRegistry, folder: Path, spec: str) -> str:
    """Where the killed publish got to, read from what it left."""
    try:
        registry.resolve(spec)
        return "committed"
    except NotFound:
        pass
    weights = "sha256:" + hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    return "uploaded" if registry.store.exists(weights) else "staging"


def test_publishers_killed_at_random_points_lose_nothing(
    workers: Workers, settings: Settings, registry: EmbeddedRegistry, tiny: Path, tmp_path: Path
) -> None:
    """Twenty publishes, each of new weights, each SIGKILLed after a seeded random delay within
    the measured duration of a publish (the fastest of three: the least noisy estimate of the
    work on a shared machine): the kills land in staging, upload and commit."""
    where = worker_settings(settings)
    folders = [
        with_weights_scaled(tiny, tmp_path / f"k{i}", 1 + i / 64) for i in range(KILLS + TIMED)
    ]
    timed = [
        workers.killed_publish(
            {"settings": where, "folder": str(f), "target": f"timed@1.0.{i}", "delay": None}
        )
        for i, f in enumerate(folders[KILLS:])
    ]
    assert [t["status"] for t in timed] == [0] * TIMED
    duration = min(t["seconds"] for t in timed)
    rng = random.Random(SEED)
    landed: Counter[str] = Counter()
    for i, folder in enumerate(folders[:KILLS]):
        spec = f"killed@1.0.{i}"
        command = {"settings": where, "folder": str(folder), "target": spec}
        answer = workers.killed_publish({**command, "delay": rng.uniform(0, duration)})
        assert answer["opened"]
        landed[_state(registry, folder, spec) if answer["killed"] else "finished"] += 1
        _sound(registry)
    killed = KILLS - landed["finished"]
    assert killed >= KILLS // 2 and len(set(landed) - {"finished"}) >= 2, (duration, landed)

    for i, folder in enumerate(folders[:KILLS]):
        registry.publish(folder, f"killed@1.0.{i}")  # publishing again succeeds
    published = {v.version for v in registry.adapter("killed").versions}
    assert published == {f"1.0.{i}" for i in range(KILLS)}
    _sound(registry)
    assert registry.collect_garbage(grace=timedelta(0)).count == 0  # nothing orphaned remains


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_server_killed_mid_upload_loses_nothing(
    serve: Callable[..., Server], registry: EmbeddedRegistry, tiny: Path, settings: Settings
) -> None:
    """The upload is mid-body (its first 16 MiB sent, so the server is reading) when the
    server is SIGKILLed: nothing is half-stored, and a new server takes the publish."""
    server = serve()  # SIGKILLed below; the fixture still reaps it
    token = registry.create_token("publish").token
    body = bytes(24 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    midway, resume = threading.Event(), threading.Event()
    outcome: list[object] = []

    def chunks() -> Iterator[bytes]:
        yield body[: 16 * 1024 * 1024]
        midway.set()  # asked for more: the first chunk is in the socket, past its buffers
        resume.wait(30)
        yield body[16 * 1024 * 1024 :]

    def upload() -> None:
        try:
            url = f"{server.url}/v1/blobs/{digest}"
            outcome.append(httpx.put(url, content=chunks(), headers=bearer(token), timeout=30))
        except httpx.TransportError as exc:
            outcome.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        assert midway.wait(30)
        server.process.kill()
        server.process.wait(timeout=30)
    finally:
        resume.set()
        uploader.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError), outcome
    assert not registry.store.exists(digest)
    _sound(registry)

    again = serve()
    with RemoteRegistry(again.url, token=token, settings=settings) as remote:
        assert remote.publish(tiny, "after-crash@1.0.0").created
        assert remote.resolve("after-crash").version == "1.0.0"
    assert (
        httpx.put(
            f"{again.url}/v1/blobs/{digest}", content=body, headers=bearer(token), timeout=30
        ).status_code
        == 201
    )
    _sound(registry)
