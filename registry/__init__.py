"""Stance registry: publish, discover, pin and load LoRA adapters.

The root is lazy (as ``huggingface_hub`` is): ``import registry.spec`` loads no database, HTTP
or torch module, and each public name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> (the module that defines it, its name there).
_EXPORTS = {
    "EmbeddedRegistry": ("registry.embedded", "EmbeddedRegistry"),
    "LocalRegistry": ("registry.embedded", "EmbeddedRegistry"),  # its first name
    "Registry": ("registry.connect", "Registry"),
    "RegistryError": ("registry.errors", "RegistryError"),
    "RemoteRegistry": ("registry.remote", "RemoteRegistry"),
    "RoleSet": ("registry.loader", "RoleSet"),
    "Settings": ("registry.settings", "Settings"),
}

__all__ = [
    "EmbeddedRegistry",
    "LocalRegistry",
    "Registry",
    "RegistryError",
    "RemoteRegistry",
    "RoleSet",
    "Settings",
]

if TYPE_CHECKING:
    from registry.connect import Registry
    from registry.embedded import EmbeddedRegistry
    from registry.embedded import EmbeddedRegistry as LocalRegistry
    from registry.errors import RegistryError
    from registry.loader import RoleSet
    from registry.remote import RemoteRegistry
    from registry.settings import Settings


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'registry' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
