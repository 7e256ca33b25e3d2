"""Content addressing: blob digests and the canonical manifest whose hash is a version's digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, Field, field_validator

from registry.errors import InvalidAdapter
from registry.spec import validate_digest

CHUNK = 1024 * 1024


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class StreamDigest:
    """SHA-256 and byte count of bytes as they pass: the one place a stream is hashed."""

    __slots__ = ("_hasher", "size")

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        self.size += len(chunk)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()


def digest_stream(stream: BinaryIO, *, out: BinaryIO | None = None) -> tuple[str, int]:
    """``(sha256:<hex>, size)`` of everything left in ``stream``, copied to ``out`` if given."""
    digest = StreamDigest()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest.digest, digest.size


def digest_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as fh:
        return digest_stream(fh)


class FileEntry(BaseModel):
    path: str
    digest: str
    size: int = Field(ge=0)  # a negative size would be a wrong Content-Length when served

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        return validate_digest(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        # Flat file names only: a manifest can never write outside the folder it is pulled into.
        if not value or "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
            raise ValueError(f"invalid file name {value!r}")
        return value


class Manifest(BaseModel):
    """The files of a version; ``digest`` hashes its canonical JSON (sorted, no whitespace)."""

    files: list[FileEntry]

    @classmethod
    def of(cls, entries: Iterable[FileEntry]) -> Manifest:
        files = sorted(entries, key=lambda e: e.path)
        if len({e.path for e in files}) != len(files):
            raise InvalidAdapter("a manifest lists the same file twice")
        return cls(files=files)

    def canonical(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        return digest_bytes(self.canonical().encode())

    def file(self, path: str) -> FileEntry:
        return next(e for e in self.files if e.path == path)


def manifest_of(files: dict[str, Path]) -> Manifest:
    """The manifest of local files, keyed by the name each will have in the version."""
    entries = []
    for name, path in files.items():
        digest, size = digest_file(path)
        entries.append(FileEntry(path=name, digest=digest, size=size))
    return Manifest.of(entries)
