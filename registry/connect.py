"""``Registry()``: the remote registry when a URL is set, the embedded one otherwise."""

from __future__ import annotations

from typing import Any

from registry.embedded import EmbeddedRegistry
from registry.interfaces import AdapterRegistry
from registry.remote import RemoteRegistry
from registry.settings import Settings


def Registry(  # noqa: N802 - reads as the class a user asks for
    url: str | None = None, *, settings: Settings | None = None, **options: Any
) -> AdapterRegistry:
    """The registry at ``url`` or ``STANCE_REGISTRY`` over HTTP; the embedded local one otherwise.

    Both have the same methods (publish, resolve, fetch, ...) and raise the same errors.
    """
    settings = settings or Settings()
    remote = url or settings.registry
    if remote:
        return RemoteRegistry(remote, settings=settings, **options)
    return EmbeddedRegistry(settings)
