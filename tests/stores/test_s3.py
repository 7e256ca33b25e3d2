"""What the S3 store adds to the conformance suite, against a real moto server on loopback.

moto stores the checksums a client sends but, unlike S3, does not verify them; these tests pin
what we send and what we refuse ourselves.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from registry.errors import IntegrityError, InvalidSpec, NotFound, Unreachable
from registry.manifest import digest_bytes
from registry.stores import open_store
from registry.stores.s3 import MiB, S3Store
from tests.stores.test_conformance import DATA, DIGEST, OneWay

BIG = os.urandom(11 * MiB)  # three parts of 5 MiB (S3's smallest part), the last one short
BIG_DIGEST = digest_bytes(BIG)


def keys(client: Any, bucket: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def uploads(client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def small_parts(bucket: str) -> S3Store:
    return S3Store(bucket, "team/blobs", multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


class Unreadable:
    """A source that fails if anyone reads it: proves that nothing was uploaded."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the store read a source it did not need")


def test_url_names_bucket_and_prefix(aws_env: str) -> None:
    store = open_store("s3://bucket-a/some/prefix/")
    assert isinstance(store, S3Store)
    assert store.url == "s3://bucket-a/some/prefix"
    hexdigest = DIGEST.removeprefix("sha256:")
    tail = f"sha256/{hexdigest[:2]}/{hexdigest[2:4]}/{hexdigest}"
    assert store.key(DIGEST) == f"some/prefix/{tail}"
    bare = open_store("s3://bucket-a")
    assert isinstance(bare, S3Store) and bare.key(DIGEST) == tail
    with pytest.raises(InvalidSpec, match="names no bucket"):
        open_store("s3:///prefix")


def test_layout_and_checksum_are_pinned(s3_url: str, s3_client: Any, s3_bucket: str) -> None:
    """``<prefix>/sha256/ab/cd/<hex>``, with the blob's own SHA-256 as S3's checksum."""
    open_store(s3_url).put(DIGEST, io.BytesIO(DATA))
    hexdigest = DIGEST.removeprefix("sha256:")
    key = f"team/blobs/sha256/{hexdigest[:2]}/{hexdigest[2:4]}/{hexdigest}"
    assert keys(s3_client, s3_bucket) == [key]
    head = s3_client.head_object(Bucket=s3_bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(hexdigest)).decode()
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == DATA


def test_checksums_follow_botocores_own_switch(
    s3_bucket: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Endpoints without flexible checksums: botocore's ``when_required`` turns ours off too."""
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    store = S3Store(s3_bucket, "p")
    assert not store.checksums
    store.put(DIGEST, io.BytesIO(DATA))
    head = s3_client.head_object(Bucket=s3_bucket, Key=store.key(DIGEST), ChecksumMode="ENABLED")
    assert "ChecksumSHA256" not in head
    with store.open(DIGEST) as fh:
        assert fh.read() == DATA


def test_existing_blob_is_not_uploaded_again(s3_url: str) -> None:
    store = open_store(s3_url)
    store.put(DIGEST, io.BytesIO(DATA))
    store.put(DIGEST, Unreadable())  # type: ignore[arg-type]


def test_mismatch_in_a_seekable_source_uploads_nothing(
    s3_url: str, s3_client: Any, s3_bucket: str
) -> None:
    with pytest.raises(IntegrityError, match="hashes to"):
        open_store(s3_url).put(BIG_DIGEST, io.BytesIO(BIG[:-1] + b"!"))
    assert keys(s3_client, s3_bucket) == [] and uploads(s3_client, s3_bucket) == []


@pytest.mark.parametrize("source", [io.BytesIO, OneWay], ids=["seekable", "one-way"])
def test_large_blob_goes_up_in_parts(s3_bucket: str, s3_client: Any, source: Any) -> None:
    store = small_parts(s3_bucket)
    store.put(BIG_DIGEST, source(BIG))
    assert keys(s3_client, s3_bucket) == [store.key(BIG_DIGEST)]  # the incoming copy is gone
    assert uploads(s3_client, s3_bucket) == []
    head = s3_client.head_object(Bucket=s3_bucket, Key=store.key(BIG_DIGEST), PartNumber=1)
    assert head["PartsCount"] == 3
    with store.open(BIG_DIGEST) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == BIG_DIGEST.removeprefix("sha256:")


def test_large_one_way_mismatch_leaves_no_object_and_no_upload(
    s3_bucket: str, s3_client: Any
) -> None:
    store = small_parts(s3_bucket)
    with pytest.raises(IntegrityError, match=f"hashes to .*not {BIG_DIGEST}"):
        store.put(BIG_DIGEST, OneWay(BIG + b"!"))  # type: ignore[arg-type]
    assert keys(s3_client, s3_bucket) == [] and uploads(s3_client, s3_bucket) == []
    assert not store.exists(BIG_DIGEST)


def test_iter_skips_objects_that_are_not_blobs(s3_url: str, s3_client: Any, s3_bucket: str) -> None:
    store = open_store(s3_url)
    store.put(DIGEST, io.BytesIO(DATA))
    hexdigest = DIGEST.removeprefix("sha256:")
    for key in (
        "team/blobs/sha256/README",
        f"team/blobs/sha256/ff/ff/{hexdigest}",  # fan-out that does not match the name
        f"team/blobs/incoming/{hexdigest}",
        f"other/sha256/{hexdigest[:2]}/{hexdigest[2:4]}/{hexdigest}",
    ):
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    assert [b.digest for b in store.iter()] == [DIGEST]


def test_sweep_removes_abandoned_uploads_only_after_the_grace(
    s3_bucket: str, s3_client: Any
) -> None:
    store = S3Store(s3_bucket, "team/blobs")
    store.put(DIGEST, io.BytesIO(DATA))
    s3_client.put_object(Bucket=s3_bucket, Key="team/blobs/incoming/abandoned", Body=b"half")
    past = datetime.now(UTC) - timedelta(hours=1)
    assert store.sweep(past) == 0
    # Created after the young-object check: moto reports every upload as initiated in 2010.
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key="team/blobs/incoming/killed")
    future = datetime.now(UTC) + timedelta(hours=1)
    assert store.sweep(future, dry_run=True) == 2
    assert len(keys(s3_client, s3_bucket)) == 2 and len(uploads(s3_client, s3_bucket)) == 1
    assert store.sweep(future) == 2
    assert keys(s3_client, s3_bucket) == [store.key(DIGEST)]
    assert uploads(s3_client, s3_bucket) == []


def test_missing_bucket_is_not_found(aws_env: str) -> None:
    store = open_store("s3://no-such-bucket-for-stance/p")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket-for-stance' does not exist"):
        store.open(DIGEST)
    with pytest.raises(NotFound, match="does not exist"):
        store.put(DIGEST, io.BytesIO(DATA))
    with pytest.raises(NotFound, match="does not exist"):
        list(store.iter())


def test_unreachable_endpoint_is_unreachable(
    aws_env: str, refusing_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{refusing_port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retry setting, honoured
    store = open_store("s3://bucket-a/p")
    for call in (
        lambda: store.exists(DIGEST),
        lambda: store.open(DIGEST),
        lambda: store.put(DIGEST, io.BytesIO(DATA)),
        lambda: list(store.iter()),
    ):
        with pytest.raises(Unreachable, match="cannot reach S3") as caught:
            call()
        assert isinstance(caught.value, ConnectionError)


class Truncating(http.server.BaseHTTPRequestHandler):
    """Promises a 1000-byte object and hangs up after 10 bytes: a connection lost mid-download."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def truncating_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Truncating)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()
    server.server_close()


def test_connection_lost_mid_read_is_unreachable(
    aws_env: str, truncating_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", truncating_endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    lost = pytest.raises(Unreachable, match="reading blob .*: cannot reach S3")
    with open_store("s3://bucket-a/p").open(DIGEST) as body, lost:
        body.read()
