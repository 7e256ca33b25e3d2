"""The client cache: layout, verification, one download for concurrent processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry.embedded import EmbeddedRegistry
from registry.errors import IntegrityError, Unreachable
from registry.manifest import FileEntry, digest_bytes
from registry.schemas import Resolution
from registry.transfer.cache import Cache

DATA = b"weights" * 1000
ENTRY = FileEntry(path="adapter_model.safetensors", digest=digest_bytes(DATA), size=len(DATA))


def resolution(*entries: FileEntry) -> Resolution:
    return Resolution(
        namespace="default",
        name="role",
        version="1.0.0",
        digest="sha256:" + "1" * 64,
        yanked=False,
        files=list(entries),
    )


def test_layout_is_pinned(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    folder = cache.version(resolution(ENTRY), lambda d: io.BytesIO(DATA))
    hexdigest = ENTRY.digest.removeprefix("sha256:")
    assert folder == tmp_path / "versions" / "default" / "role" / "1.0.0"
    link = folder / "adapter_model.safetensors"
    assert link.is_symlink() and os.readlink(link) == f"../../../../blobs/{hexdigest}"
    assert (tmp_path / "blobs" / hexdigest).read_bytes() == DATA
    assert oct((tmp_path / "blobs" / hexdigest).stat().st_mode & 0o777) == "0o444"


def test_download_that_does_not_match_is_refused_and_not_kept(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(IntegrityError, match="expected 7000 bytes"):
        cache.blob(ENTRY, lambda d: io.BytesIO(DATA + b"x"))
    assert not cache.blob_path(ENTRY.digest).exists()
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == []


def test_tampered_blob_is_caught_before_first_use(tmp_path: Path) -> None:
    Cache(tmp_path).blob(ENTRY, lambda d: io.BytesIO(DATA))
    path = Cache(tmp_path).blob_path(ENTRY.digest)
    path.chmod(0o644)
    path.write_bytes(b"evil")
    fresh = Cache(tmp_path)  # a new process: it has verified nothing yet
    with pytest.raises(IntegrityError, match=f"hashes to .*expected {ENTRY.digest}"):
        fresh.verify(ENTRY)
    # Used, it is fetched again and verified before the rename replaces it (issue 16); a source
    # that serves the same bad bytes is refused, and the bad copy never passes for the blob.
    with pytest.raises(IntegrityError, match=f"hashing to .*{ENTRY.digest}"):
        fresh.blob(ENTRY, lambda d: io.BytesIO(b"evil"))
    assert fresh.blob(ENTRY, lambda d: io.BytesIO(DATA)).read_bytes() == DATA


def test_resolutions_are_remembered(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    assert cache.recall("role@^1") is None
    cache.remember("role@^1", resolution(ENTRY))
    assert Cache(tmp_path).recall("role@^1") == resolution(ENTRY)


FETCH = """
import sys
from registry.embedded import EmbeddedRegistry
registry = EmbeddedRegistry()
sys.stdin.readline()
print(registry.fetch(sys.argv[1]))
"""


def test_two_processes_fetch_one_version_once(
    registry: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    registry.publish(adapters["curious"], "curious@1.0.0")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FETCH, "curious@1.0.0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    folders = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(folders) == 1
    folder = Path(folders.pop())
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert (folder / name).read_bytes() == (adapters["curious"] / name).read_bytes()
    blobs = registry.settings.cache_dir / "blobs"
    assert len([p for p in blobs.iterdir() if not p.name.startswith(".")]) == 3
    assert not [p for p in blobs.iterdir() if p.name.startswith(".")]  # no temp files left


class _Breaks:
    """A real blob stream that is cut after ``keep`` bytes, as a dropped connection is."""

    def __init__(self, stream, keep: int) -> None:  # noqa: ANN001
        self.stream, self.left = stream, keep

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise Unreachable("connection dropped")
        data = self.stream.read(min(size, self.left) if size > 0 else self.left)
        self.left -= len(data)
        return data

    def __enter__(self) -> _Breaks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.__exit__(*exc)


def test_a_broken_download_resumes_with_a_range_request(
    serve,
    operator,
    adapters: dict[str, Path],
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from registry.remote import RemoteRegistry
    from registry.settings import Settings

    operator.publish(adapters["curious"], "curious@1.0.0")
    server = serve()
    with RemoteRegistry(server.url, settings=Settings(home=tmp_path / "client")) as remote:
        entry = next(
            f for f in remote.resolve("curious").files if f.path == "adapter_model.safetensors"
        )
        cache = Cache(tmp_path / "cache")
        offsets: list[int] = []

        def resume(digest: str, start: int):  # noqa: ANN202
            offsets.append(start)
            return remote.open_blob(digest, start)

        half = entry.size // 2
        with pytest.raises(Unreachable, match="connection dropped"):
            cache.blob(entry, lambda d: _Breaks(remote.open_blob(d), half), resume)
        partial = cache.blob_path(entry.digest).parent / f".{entry.digest[7:]}.partial"
        assert partial.stat().st_size == half and not cache.blob_path(entry.digest).exists()
        path = cache.blob(entry, lambda d: _Breaks(remote.open_blob(d), 0), resume)
        assert offsets == [half]  # only the rest was asked for
        assert path.read_bytes() == (adapters["curious"] / entry.path).read_bytes()
        assert not partial.exists()


def test_without_resume_a_broken_download_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(Unreachable):
        cache.blob(ENTRY, lambda d: _Breaks(io.BytesIO(DATA), 100))
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == []
