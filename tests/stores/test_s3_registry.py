"""A registry whose blobs live in S3 (moto on loopback), on SQLite and PostgreSQL catalogs."""

from __future__ import annotations

import filecmp
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from registry.catalog.gc import collect_garbage
from registry.embedded import EmbeddedRegistry
from registry.errors import IntegrityError
from registry.manifest import digest_bytes
from registry.settings import Settings
from registry.stores.s3 import S3Store

SPEC = "team-a/curious@1.0.0"


@pytest.fixture
def s3_registry(settings: Settings, s3_url: str) -> Iterator[EmbeddedRegistry]:
    """``STANCE_STORE=s3://bucket/prefix``; the endpoint comes from ``AWS_ENDPOINT_URL``."""
    registry = EmbeddedRegistry(Settings(store=s3_url), actor="test")
    assert isinstance(registry.store, S3Store)
    yield registry
    registry.close()


@pytest.fixture
def published(s3_registry: EmbeddedRegistry, adapters: dict[str, Path]) -> Path:
    result = s3_registry.publish(adapters["curious"], SPEC)
    assert result.created
    return adapters["curious"]


def same_files(left: Path, right: Path, names: list[str]) -> bool:
    match, mismatch, errors = filecmp.cmpfiles(left, right, names, shallow=False)
    return sorted(match) == sorted(names) and not mismatch and not errors


def test_publish_and_pull_through_s3(
    s3_registry: EmbeddedRegistry,
    published: Path,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    files = s3_registry.resolve(SPEC).files
    store = s3_registry.store
    assert isinstance(store, S3Store)
    listed = s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted({store.key(f.digest) for f in files})
    assert not s3_registry.publish(published, SPEC).created  # idempotent, nothing re-sent

    out = s3_registry.fetch(SPEC, tmp_path / "out")
    names = [f.path for f in files]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert same_files(published, out, names)


def test_cold_cache_pull(
    s3_registry: EmbeddedRegistry,
    published: Path,
    settings: Settings,
    aws_env: str,
    refusing_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty cache fills from S3; afterwards the version opens with S3 unreachable."""
    cache = settings.cache_dir
    assert not cache.exists()
    folder = s3_registry.fetch(SPEC)
    names = [f.path for f in s3_registry.resolve(SPEC).files]
    assert folder == cache / "versions" / "team-a" / "curious" / "1.0.0"
    assert all((folder / n).is_symlink() for n in names)
    assert same_files(published, folder, names)

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{refusing_port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with EmbeddedRegistry(Settings(store=s3_registry.store.url)) as offline_store:
        again = offline_store.fetch(SPEC)  # a new process: verifies the cache, needs no S3
    assert again == folder and same_files(published, again, names)


def test_corrupted_object_is_refused_and_nothing_is_written(
    s3_registry: EmbeddedRegistry,
    published: Path,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    store = s3_registry.store
    assert isinstance(store, S3Store)
    weights = next(f for f in s3_registry.resolve(SPEC).files if f.path.endswith(".safetensors"))
    s3_client.put_object(Bucket=s3_bucket, Key=store.key(weights.digest), Body=b"tampered")

    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match=f"expected {weights.digest}"):
        s3_registry.fetch(SPEC, out)
    assert list(out.iterdir()) == []

    with pytest.raises(IntegrityError, match=f"expected .*{weights.digest}"):
        s3_registry.fetch(SPEC)  # into the shared cache
    blobs = s3_registry.cache.root / "blobs"
    assert not s3_registry.cache.blob_path(weights.digest).exists()
    assert [p for p in blobs.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_gc_frees_unreferenced_objects_in_s3(
    s3_registry: EmbeddedRegistry, published: Path, s3_client: Any, s3_bucket: str
) -> None:
    orphan = b"uploaded by a publish that never committed"
    digest = digest_bytes(orphan)
    s3_registry.store.put(digest, io.BytesIO(orphan))
    s3_client.put_object(Bucket=s3_bucket, Key="team/blobs/incoming/left-by-a-kill", Body=b"x")
    referenced = {f.digest for f in s3_registry.resolve(SPEC).files}

    young = collect_garbage(s3_registry.sessions, s3_registry.store)
    assert (young.count, young.leftover_uploads) == (0, 0)

    result = collect_garbage(s3_registry.sessions, s3_registry.store, grace=timedelta(0))
    assert (result.digests, result.bytes, result.leftover_uploads) == ([digest], len(orphan), 1)
    assert {b.digest for b in s3_registry.store.iter()} == referenced
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert not any("/incoming/" in k for k in keys)
