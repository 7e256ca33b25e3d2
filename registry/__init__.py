"""Stance registry: publish, discover, pin and load LoRA adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.embedded import EmbeddedRegistry
from registry.errors import RegistryError
from registry.remote import RemoteRegistry
from registry.settings import Settings

if TYPE_CHECKING:
    from registry.loader import RoleSet

__all__ = ["EmbeddedRegistry", "Registry", "RegistryError", "RemoteRegistry", "RoleSet", "Settings"]


def __getattr__(name: str) -> object:
    # RoleSet needs torch; the CLI and the server never import it.
    if name == "RoleSet":
        from registry.loader import RoleSet

        return RoleSet
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


def Registry(  # noqa: N802 - reads as the class a user asks for
    url: str | None = None, *, settings: Settings | None = None, **options: Any
) -> EmbeddedRegistry | RemoteRegistry:
    """The registry at ``url`` or ``STANCE_REGISTRY`` over HTTP; the embedded local one otherwise.

    Both have the same methods (publish, resolve, fetch, ...) and raise the same errors.
    """
    settings = settings or Settings()
    remote = url or settings.registry
    if remote:
        return RemoteRegistry(remote, settings=settings, **options)
    return EmbeddedRegistry(settings)
