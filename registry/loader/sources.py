"""Where a RoleSet's versions come from: a registry (remembered for offline starts) or a lock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from registry.errors import NotFound, Unreachable
from registry.interfaces import AdapterRegistry
from registry.schemas import Resolution
from registry.transfer.cache import Cache, Opener
from registry.transfer.lockfile import Lock

log = logging.getLogger(__name__)
Source = Callable[[str], tuple[Resolution, Path]]


def registry_source(registry: AdapterRegistry) -> Source:
    """Resolve once, then take exactly that version from the verified client cache.

    Each answer is remembered, so a service restarted while the registry is down still starts
    with the versions it last resolved (from the cache, verified).
    """

    def locate(spec: str) -> tuple[Resolution, Path]:
        try:
            resolution = registry.resolve(spec)
        except Unreachable:
            remembered = registry.cache.recall(spec)
            if remembered is None:
                raise
            log.warning("registry unreachable: using the last resolution of %s", spec)
            resolution = remembered
        else:
            registry.cache.remember(spec, resolution)
        # Not fetch(spec): it would resolve a second time, and could see an alias move between.
        return resolution, registry.cache.version(
            resolution, registry.open_blob, resume=registry.open_blob
        )

    return locate


def lock_source(lock: Lock, cache: Cache, opener: Opener | None) -> Source:
    """Versions from stance.lock: no catalog, and no network once the cache holds the blobs.

    Every blob is verified against the lock's digest before first use; a mismatch raises
    IntegrityError naming the file and both digests.
    """

    def offline(digest: str) -> BinaryIO:
        raise NotFound(f"blob {digest} is not in the cache: run `stance sync` with the lock")

    def locate(spec: str) -> tuple[Resolution, Path]:
        resolution = lock.pinned(spec)
        return resolution, cache.version(resolution, opener or offline)

    return locate
