"""Blobs in S3 (or any S3-compatible endpoint): ``s3://bucket/prefix``, content-addressed.

Keys are ``<prefix>/sha256/ab/cd/<hex>`` (the local store's layout). Endpoint, credentials,
region and retries come from boto3's own configuration chain (``AWS_ENDPOINT_URL``,
``AWS_PROFILE``, the credential variables, ``AWS_RETRY_MODE``, ``AWS_MAX_ATTEMPTS``); this module
adds none of its own. ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` (botocore's switch for
endpoints without flexible checksums) also turns off the SHA-256 checksums sent here.

A source whose bytes hash otherwise is refused without an object under the blob's key:

- a seekable source up to ``multipart_threshold`` is hashed first (a mismatch uploads nothing),
  then sent in one PUT whose ``ChecksumSHA256`` *is* the expected digest, so S3 itself refuses
  bytes that changed between the two passes (an endpoint that ignores checksums cannot);
- anything else streams through a hasher to ``<prefix>/incoming/<uuid>`` (multipart when large,
  per-part SHA-256 checksums) and is copied server-side under its real key only once the digest
  matched. ``S3Store.sweep`` removes incoming objects and multipart uploads that a killed
  process left behind; ``stance gc`` calls it.
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from registry.errors import (
    Forbidden,
    IntegrityError,
    NotFound,
    RegistryError,
    Unauthorized,
    Unreachable,
)
from registry.manifest import StreamDigest, digest_stream
from registry.stores.base import StoredBlob, blob_key

MiB = 1024 * 1024
_BLOB_TAIL = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
_FORBIDDEN = {"403", "AccessDenied", "AllAccessDisabled", "AccountProblem"}
_UNAUTHORIZED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_BAD_BYTES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
_UNAVAILABLE = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown"}


def _domain_error(exc: ClientError, what: str, bucket: str, missing: str | None) -> RegistryError:
    """The one mapping from an S3 error response to the registry's own errors."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), error.get("Message", "")
    if code == "NoSuchBucket":
        return NotFound(f"{what}: the bucket {bucket!r} does not exist")
    if code in _NOT_FOUND:
        return NotFound(missing or f"{what}: not found")
    if code in _FORBIDDEN:
        return Forbidden(f"{what}: S3 refused access ({code}: {message})")
    if code in _UNAUTHORIZED:
        return Unauthorized(f"{what}: S3 rejected the credentials ({code}: {message})")
    if code in _BAD_BYTES:
        return IntegrityError(f"{what}: S3 refused the bytes ({code}: {message})")
    if code in _UNAVAILABLE:
        return Unreachable(f"{what}: S3 is unavailable ({code}: {message})")
    return RegistryError(f"{what}: S3 error {code}: {message}")


@contextmanager
def _translated(what: str, bucket: str, missing: str | None = None) -> Iterator[None]:
    """Turn botocore's exceptions into domain errors where they enter (the only place).

    ``what`` says what was being done; ``missing`` is the NotFound message, when one fits.
    """
    try:
        yield
    except ClientError as exc:
        raise _domain_error(exc, what, bucket, missing) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise Unauthorized(f"{what}: no usable AWS credentials ({exc})") from exc
    except (BotoConnectionError, HTTPClientError, IncompleteReadError) as exc:
        raise Unreachable(f"{what}: cannot reach S3 ({exc})") from exc
    except BotoCoreError as exc:
        raise RegistryError(f"{what}: {exc}") from exc


class _Body(io.RawIOBase):
    """A GetObject stream whose network errors surface as domain errors mid-read too.

    ``read(n)`` returns the HTTP client's own bytes, ``n`` of them unless the object ends
    first (botocore reads until then): a buffered reader over ``readinto`` copied every byte
    of a pull once more.
    """

    def __init__(self, body: Any, what: str, bucket: str) -> None:
        self._body, self._what, self._bucket = body, what, bucket

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with _translated(self._what, self._bucket):
            data: bytes = self._body.read(None if size is None or size < 0 else size)
        return data

    def readinto(self, buffer: Any) -> int:
        with _translated(self._what, self._bucket):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _Hashing:
    """Hashes what boto3 reads; no ``seek``, so s3transfer reads it exactly once, in order."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.seen = StreamDigest()

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self.seen.update(chunk)
        return chunk


def _hash_seekable(source: BinaryIO) -> tuple[str, int, int]:
    """``(digest, size, start)`` of what is left in ``source``, rewound to ``start``."""
    start = source.tell()
    digest, size = digest_stream(source)
    source.seek(start)
    return digest, size, start


def _seekable(source: BinaryIO) -> bool:
    try:
        return bool(source.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class S3Store:
    """Content-addressed blobs in one bucket under one prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._base = f"{self.prefix}/" if self.prefix else ""
        self.client = client or boto3.session.Session().client("s3")
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=4,
        )
        config = self.client.meta.config
        self.checksums = getattr(config, "request_checksum_calculation", None) != "when_required"

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def key(self, digest: str) -> str:
        """The object key of ``digest``: ``<prefix>/sha256/ab/cd/<hex>``."""
        return self._base + blob_key(digest)

    def _errors(self, what: str, missing: str | None = None) -> Any:
        return _translated(what, self.bucket, missing)

    def _missing(self, digest: str) -> str:
        return f"blob {digest} is not in the store {self.url}"

    def put(self, digest: str, source: BinaryIO) -> None:
        """Upload once (HEAD first); a source that hashes otherwise never lands under its key."""
        if self.exists(digest):
            return
        if _seekable(source):
            actual, size, start = _hash_seekable(source)
            if actual != digest:
                raise IntegrityError(f"blob content hashes to {actual}, not {digest}")
            if size <= self.transfer.multipart_threshold:
                self._put_single(digest, source)
                return
            source.seek(start)
        self._put_via_incoming(digest, source)

    def _put_single(self, digest: str, source: BinaryIO) -> None:
        extra: dict[str, str] = {}
        if self.checksums:
            raw = bytes.fromhex(digest.removeprefix("sha256:"))
            # The expected digest itself, not one botocore computes from the bytes it sends.
            extra = {
                "ChecksumAlgorithm": "SHA256",
                "ChecksumSHA256": base64.b64encode(raw).decode(),
            }
        with self._errors(f"uploading blob {digest} to {self.url}"):
            self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=source, **extra)

    def _put_via_incoming(self, digest: str, source: BinaryIO) -> None:
        incoming = f"{self._base}incoming/{uuid.uuid4().hex}"
        extra = {"ChecksumAlgorithm": "SHA256"} if self.checksums else {}
        hashing = _Hashing(source)
        try:
            with self._errors(f"uploading blob {digest} to {self.url}"):
                self.client.upload_fileobj(
                    hashing, self.bucket, incoming, ExtraArgs=extra, Config=self.transfer
                )
            if hashing.seen.digest != digest:
                raise IntegrityError(f"blob content hashes to {hashing.seen.digest}, not {digest}")
            with self._errors(f"copying blob {digest} into place in {self.url}"):
                self.client.copy(
                    {"Bucket": self.bucket, "Key": incoming},
                    self.bucket,
                    self.key(digest),
                    ExtraArgs=extra,
                    Config=self.transfer,
                )
        finally:
            with suppress(ClientError, BotoCoreError):
                self.client.delete_object(Bucket=self.bucket, Key=incoming)

    def open(self, digest: str, start: int = 0) -> BinaryIO:
        """A streaming reader of the blob from ``start`` (a Range GET); NotFound if there is
        none."""
        what = f"reading blob {digest} from {self.url}"
        ranged = {"Range": f"bytes={start}-"} if start else {}
        with self._errors(what, self._missing(digest)):
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(digest), **ranged)
        return cast(BinaryIO, _Body(response["Body"], what, self.bucket))

    def exists(self, digest: str) -> bool:
        try:
            with self._errors(f"looking up blob {digest} in {self.url}", self._missing(digest)):
                self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except NotFound:
            return False
        return True

    def delete(self, digest: str) -> None:
        with self._errors(f"deleting blob {digest} from {self.url}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def iter(self) -> Iterator[StoredBlob]:
        """Every blob under ``<prefix>/sha256/``, with its size and LastModified."""
        root = self._base + "sha256/"
        with self._errors(f"listing {self.url}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    match = _BLOB_TAIL.match(obj["Key"][len(root) :])
                    if match is None or match[3][:4] != match[1] + match[2]:
                        continue  # not ours: a stray object under the prefix
                    modified = obj["LastModified"].astimezone(UTC)
                    yield StoredBlob(f"sha256:{match[3]}", obj["Size"], modified)

    def sweep(self, before: datetime, *, dry_run: bool = False) -> int:
        """Remove incoming objects and multipart uploads started before ``before``; their count.

        A process killed mid-upload leaves these behind; they are never blobs, so ``iter``
        does not list them. Use a grace period longer than the slowest upload.
        """
        found = 0
        with self._errors(f"sweeping leftover uploads in {self.url}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._base + "incoming/"
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["LastModified"] < before:
                        found += 1
                        if not dry_run:
                            self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
            uploads = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._base
            )
            for page in uploads:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < before:
                        found += 1
                        if not dry_run:
                            self.client.abort_multipart_upload(
                                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                            )
        return found
