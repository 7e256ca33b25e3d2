"""Stance registry: publish, discover, pin and load LoRA adapters."""

from __future__ import annotations

from registry.errors import RegistryError
from registry.local import LocalRegistry
from registry.settings import Settings

__all__ = ["LocalRegistry", "Registry", "RegistryError", "RoleSet", "Settings"]


def __getattr__(name: str) -> object:
    # RoleSet needs torch; the CLI and the server never import it.
    if name == "RoleSet":
        from registry.loader import RoleSet

        return RoleSet
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


def Registry(url: str | None = None, *, settings: Settings | None = None) -> LocalRegistry:  # noqa: N802
    """The registry named by ``url`` or ``STANCE_REGISTRY``; the embedded local one otherwise."""
    settings = settings or Settings()
    remote = url or settings.registry
    if remote:
        raise RegistryError(
            f"remote registries ({remote}) are served by the HTTP API, which this build lacks; "
            "unset STANCE_REGISTRY to use the local catalog"
        )
    return LocalRegistry(settings)
