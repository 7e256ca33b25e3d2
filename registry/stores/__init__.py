"""Blob stores behind one small protocol (``base``); ``open_store(url)`` picks the backend.

The backends are imported only when their URL is opened: boto3 and huggingface_hub cost a
command that never touches them nothing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from registry.errors import InvalidSpec
from registry.stores.base import (
    Release,
    Releasing,
    Store,
    StoredBlob,
    blob_key,
    copy_hashing,
    copy_verified,
)

__all__ = [
    "Release",
    "Releasing",
    "Store",
    "StoredBlob",
    "blob_key",
    "copy_hashing",
    "copy_verified",
    "open_store",
]


def open_store(url: str) -> Store:
    """The store for ``url``: ``file:///abs/path``, ``s3://bucket/prefix`` or ``hf://owner``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from registry.stores.local import LocalStore

        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidSpec(f"store URL {url!r} names no bucket: expected s3://bucket/prefix")
        from registry.stores.s3 import S3Store

        return S3Store(parsed.netloc, unquote(parsed.path))
    if parsed.scheme == "hf":
        if not parsed.netloc or parsed.path.strip("/"):
            raise InvalidSpec(f"store URL {url!r}: expected hf://owner (a user or organization)")
        from registry.stores.hf import HfStore

        return HfStore(parsed.netloc)
    raise InvalidSpec(
        f"unsupported store URL {url!r}: expected file:///absolute/path, s3://bucket/prefix "
        "or hf://owner"
    )
