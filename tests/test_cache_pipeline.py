"""The client cache's download loop: read, hash and write overlap, and every guarantee holds.

Blobs here span many reads (``READ``) and more than the hashing thread's look-ahead, so each
test crosses the hand-over between the reading and the hashing threads.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from registry.errors import IntegrityError, Unreachable
from registry.manifest import FileEntry, digest_bytes
from registry.schemas import Resolution
from registry.transfer.cache import AHEAD, READ, Cache

DATA = np.random.default_rng(0).bytes((AHEAD + 3) * READ + 12345)
ENTRY = FileEntry(path="adapter_model.safetensors", digest=digest_bytes(DATA), size=len(DATA))


class _Source:
    """Bytes served in ``step``-sized reads, counting what was read; raises Unreachable once
    ``cut`` bytes are out, as a dropped connection does."""

    def __init__(self, data: bytes, *, step: int = READ, cut: int | None = None) -> None:
        self.stream, self.step, self.cut, self.sent = io.BytesIO(data), step, cut, 0

    def read(self, size: int = -1) -> bytes:
        if self.cut is not None and self.sent >= self.cut:
            raise Unreachable("connection dropped")
        data = self.stream.read(min(size, self.step))
        self.sent += len(data)
        return data

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def _partial(cache: Cache) -> Path:
    return cache.blob_path(ENTRY.digest).parent / f".{ENTRY.digest[7:]}.partial"


@pytest.mark.parametrize("step", [READ, 4096, READ + 1])
def test_a_blob_of_many_reads_lands_whole_and_read_only(tmp_path: Path, step: int) -> None:
    path = Cache(tmp_path).blob(ENTRY, lambda _: _Source(DATA, step=step))
    assert path.read_bytes() == DATA
    assert oct(path.stat().st_mode & 0o777) == "0o444"
    assert not _partial(Cache(tmp_path)).exists()


def test_one_byte_changed_mid_stream_is_refused_and_not_kept(tmp_path: Path) -> None:
    middle = len(DATA) // 2
    bad = DATA[:middle] + bytes([DATA[middle] ^ 1]) + DATA[middle + 1 :]
    cache = Cache(tmp_path)
    with pytest.raises(IntegrityError, match=f"hashing to .*expected {len(DATA)} bytes"):
        cache.blob(ENTRY, lambda _: _Source(bad))
    assert os.listdir(tmp_path / "blobs") == []


def test_a_source_sending_more_than_declared_is_cut_off_at_once(tmp_path: Path) -> None:
    flood = _Source(DATA + b"\0" * (20 * READ))
    with pytest.raises(IntegrityError, match="more than the expected"):
        Cache(tmp_path).blob(ENTRY, lambda _: flood)
    assert flood.sent <= ENTRY.size + READ  # the read that went past the size, no more
    assert os.listdir(tmp_path / "blobs") == []


def test_a_cut_download_keeps_every_byte_read_and_resumes(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cut = (AHEAD + 1) * READ + 777  # writes still queued on the hashing thread when it drops
    offsets: list[int] = []

    def resume(digest: str, start: int) -> _Source:
        offsets.append(start)
        return _Source(DATA[start:])

    with pytest.raises(Unreachable, match="connection dropped"):
        cache.blob(ENTRY, lambda _: _Source(DATA, step=READ // 2 + 1, cut=cut), resume)
    kept = _partial(cache).read_bytes()
    assert len(kept) >= cut and DATA.startswith(kept)  # flushed in order, nothing lost
    path = Cache(tmp_path).blob(ENTRY, lambda _: _Source(b"never asked"), resume)
    assert offsets == [len(kept)] and path.read_bytes() == DATA


def test_a_warm_process_still_repairs_a_version_link(tmp_path: Path) -> None:
    """The version folder's checks are made once per process; its links are read each time."""
    cache = Cache(tmp_path)
    resolution = Resolution(
        namespace="default",
        name="role",
        version="1.0.0",
        digest=ENTRY.digest,
        yanked=False,
        files=[ENTRY],
    )
    folder = cache.version(resolution, lambda _: _Source(DATA))
    link = folder / ENTRY.path
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere")
    assert cache.version(resolution, lambda _: _Source(b"")) == folder
    assert os.readlink(link) == f"../../../../blobs/{ENTRY.digest[7:]}"
    assert link.read_bytes() == DATA
