"""What every command shares: settings (the environment plus global options) and the registry.

Everything heavy is imported inside the functions: a command loads only what it uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cli import output
from registry.errors import RegistryError

if TYPE_CHECKING:
    from registry.embedded import EmbeddedRegistry
    from registry.interfaces import AdapterRegistry
    from registry.settings import Settings

# Global options (stance --home ... COMMAND) given on this command line.
overrides: dict[str, str] = {}


def settings() -> Settings:
    from registry.settings import Settings

    return Settings(**overrides)  # type: ignore[arg-type]


def _setting(name: str) -> str | None:
    """A global option, else its STANCE_* variable, as pydantic-settings reads it (any case)."""
    if name in overrides:
        return overrides[name]
    wanted = f"stance_{name}"
    return next((v for k, v in os.environ.items() if k.lower() == wanted), None)


def server_url() -> str | None:
    """The server to talk to, read without importing pydantic (``Settings.registry``)."""
    return _setting("registry") or None


def catalog_url() -> str:
    """``Settings.catalog_url`` without pydantic-settings (0.2 s to import); a test compares."""
    explicit = _setting("database_url")
    if explicit:
        return explicit
    home = _setting("home")
    root = Path(home) if home is not None else Path.home() / ".stance"
    return f"sqlite:///{root / 'catalog.db'}"


def _where_local(current: Settings) -> str:
    return (
        f"looked in the local registry at {current.home}; "
        "set STANCE_REGISTRY or pass --registry URL to use a server"
    )


def open_registry() -> AdapterRegistry:
    """The local registry, or the server named by --registry / STANCE_REGISTRY."""
    current = settings()
    if current.registry:
        from registry.remote import RemoteRegistry

        return RemoteRegistry(current.registry, settings=current, progress=output.Transfers())
    from registry.embedded import EmbeddedRegistry

    output.local_hint[:] = [_where_local(current)]
    return EmbeddedRegistry(current)


def embedded_registry(purpose: str) -> EmbeddedRegistry:
    """The local catalog itself, for work that never goes over HTTP."""
    current = settings()
    if current.registry:
        raise RegistryError(
            f"{purpose} needs the catalog itself: run it where the registry's database is "
            "reachable, without --registry / STANCE_REGISTRY"
        )
    from registry.embedded import EmbeddedRegistry

    return EmbeddedRegistry(current)
