"""One conformance suite for every Store backend: local, S3 (a real moto server on loopback) and
the Hugging Face Hub (our stand-in for its HTTP API on loopback, driven by huggingface_hub)."""

from __future__ import annotations

import io
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from registry.errors import IntegrityError, NotFound
from registry.manifest import FileEntry, digest_bytes
from registry.stores import Store, copy_verified, open_store

DATA = b"adapter bytes " * 1000
DIGEST = digest_bytes(DATA)
OTHER = digest_bytes(DATA * 2)


@pytest.fixture(params=["local", "s3", "hf"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield open_store((tmp_path / "blobs").as_uri())
    else:
        yield open_store(request.getfixturevalue(f"{request.param}_url"))


def test_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)


def test_put_open_exists_delete(store: Store) -> None:
    assert not store.exists(DIGEST)
    store.put(DIGEST, io.BytesIO(DATA))
    assert store.exists(DIGEST)
    with store.open(DIGEST) as fh:
        assert fh.read() == DATA
    store.put(DIGEST, io.BytesIO(DATA))  # idempotent
    assert [(b.digest, b.size) for b in store.iter()] == [(DIGEST, len(DATA))]
    store.delete(DIGEST)
    assert not store.exists(DIGEST)
    assert list(store.iter()) == []


def test_put_refuses_bytes_that_do_not_match(store: Store) -> None:
    with pytest.raises(IntegrityError, match="hashes to"):
        store.put(DIGEST, io.BytesIO(DATA + b"!"))
    assert not store.exists(DIGEST)
    assert list(store.iter()) == []


class OneWay:
    """A source that cannot seek, like a socket or a pipe: read once, in order."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def test_put_from_a_stream_that_cannot_seek(store: Store) -> None:
    store.put(DIGEST, OneWay(DATA))  # type: ignore[arg-type]
    with store.open(DIGEST) as fh:
        assert fh.read() == DATA
    with pytest.raises(IntegrityError, match="hashes to"):
        store.put(OTHER, OneWay(DATA))  # type: ignore[arg-type]
    assert not store.exists(OTHER)
    assert [b.digest for b in store.iter()] == [DIGEST]


def test_open_streams_in_chunks(store: Store) -> None:
    store.put(DIGEST, io.BytesIO(DATA))
    chunks = []
    with store.open(DIGEST) as fh:
        while chunk := fh.read(4096):
            chunks.append(chunk)
    assert fh.closed
    assert b"".join(chunks) == DATA and len(chunks) == -(-len(DATA) // 4096)


def test_iter_reports_size_and_an_aware_modification_time(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)  # S3 keeps whole seconds
    store.put(DIGEST, io.BytesIO(DATA))
    store.put(OTHER, io.BytesIO(DATA * 2))
    listed = {b.digest: b for b in store.iter()}
    assert {d: b.size for d, b in listed.items()} == {DIGEST: len(DATA), OTHER: 2 * len(DATA)}
    for blob in listed.values():
        assert before <= blob.modified <= datetime.now(UTC)


def test_delete_of_a_missing_blob_is_a_no_op(store: Store) -> None:
    store.delete(DIGEST)
    assert not store.exists(DIGEST)


def test_missing_blob_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="not in the store"):
        store.open(DIGEST)


def test_copy_verified_is_all_or_nothing(store: Store, tmp_path: Path) -> None:
    store.put(DIGEST, io.BytesIO(DATA))
    good = FileEntry(path="a.bin", digest=DIGEST, size=len(DATA))
    out = tmp_path / "out"
    copy_verified(store, [good], out)
    assert (out / "a.bin").read_bytes() == DATA
    lying = FileEntry(path="b.bin", digest="sha256:" + "0" * 64, size=1)
    with pytest.raises(NotFound):
        copy_verified(store, [good, lying], tmp_path / "out2")
    assert list((tmp_path / "out2").iterdir()) == []


def test_local_layout_is_pinned(tmp_path: Path) -> None:
    """Blobs live at sha256/ab/cd/<hex>, read-only; other tools and backups depend on it."""
    store = open_store((tmp_path / "blobs").as_uri())
    store.put(DIGEST, io.BytesIO(DATA))
    hexdigest = DIGEST.removeprefix("sha256:")
    path = tmp_path / "blobs" / "sha256" / hexdigest[:2] / hexdigest[2:4] / hexdigest
    assert path.read_bytes() == DATA
    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_corrupted_blob_in_store_is_caught_and_nothing_written(tmp_path: Path) -> None:
    store = open_store((tmp_path / "blobs").as_uri())
    store.put(DIGEST, io.BytesIO(DATA))
    hexdigest = DIGEST.removeprefix("sha256:")
    path = tmp_path / "blobs" / "sha256" / hexdigest[:2] / hexdigest[2:4] / hexdigest
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match="expected " + DIGEST):
        copy_verified(store, [FileEntry(path="w", digest=DIGEST, size=len(DATA))], out)
    assert list(out.iterdir()) == []


def test_unknown_store_scheme_is_refused() -> None:
    from registry.errors import InvalidSpec

    with pytest.raises(InvalidSpec, match="unsupported store URL"):
        open_store("ftp://example/blobs")


def test_local_sweep_removes_killed_uploads_only(tmp_path: Path) -> None:
    import os
    from datetime import UTC, datetime, timedelta

    store = open_store((tmp_path / "blobs").as_uri())
    store.put(DIGEST, io.BytesIO(DATA))
    hexdigest = DIGEST.removeprefix("sha256:")
    folder = tmp_path / "blobs" / "sha256" / hexdigest[:2] / hexdigest[2:4]
    leftover = folder / ".incoming-killed"
    leftover.write_bytes(b"half a blob")
    old = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    os.utime(leftover, (old, old))
    fresh = folder / ".incoming-live"
    fresh.write_bytes(b"in flight")
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    assert store.sweep(cutoff, dry_run=True) == 1 and leftover.exists()  # type: ignore[attr-defined]
    assert store.sweep(cutoff) == 1  # type: ignore[attr-defined]
    assert not leftover.exists() and fresh.exists() and store.exists(DIGEST)


def test_local_put_of_an_existing_blob_makes_it_young_again(tmp_path: Path) -> None:
    """gc's grace period must protect a re-publish of bytes that were about to be collected."""
    import os

    store = open_store((tmp_path / "blobs").as_uri())
    store.put(DIGEST, io.BytesIO(DATA))
    hexdigest = DIGEST.removeprefix("sha256:")
    path = tmp_path / "blobs" / "sha256" / hexdigest[:2] / hexdigest[2:4] / hexdigest
    os.utime(path, (1_000_000, 1_000_000))
    store.put(DIGEST, io.BytesIO(DATA))
    (blob,) = store.iter()
    assert blob.modified.timestamp() > 1_000_000 + 3600


def test_open_from_an_offset(store: Store) -> None:
    """What resuming a broken download asks of every backend."""
    store.put(DIGEST, io.BytesIO(DATA))
    with store.open(DIGEST, 1000) as fh:
        assert fh.read() == DATA[1000:]
    with store.open(DIGEST, 0) as fh:
        assert fh.read(5) == DATA[:5]
