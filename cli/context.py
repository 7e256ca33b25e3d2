"""What every command shares: settings (the environment plus global options) and the registry."""

from __future__ import annotations

from cli.output import Transfers
from registry.connect import Registry
from registry.embedded import EmbeddedRegistry
from registry.errors import RegistryError
from registry.interfaces import AdapterRegistry
from registry.settings import Settings

# Global options (stance --home ... COMMAND) given on this command line.
overrides: dict[str, str] = {}


def settings() -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


def open_registry() -> AdapterRegistry:
    """The local registry, or the server named by --registry / STANCE_REGISTRY."""
    current = settings()
    if current.registry:
        return Registry(settings=current, progress=Transfers())
    return Registry(settings=current)


def embedded_registry(purpose: str) -> EmbeddedRegistry:
    """The local catalog itself, for work that never goes over HTTP."""
    current = settings()
    if current.registry:
        raise RegistryError(
            f"{purpose} needs the catalog itself: run it where the registry's database is "
            "reachable, without --registry / STANCE_REGISTRY"
        )
    return EmbeddedRegistry(current)
