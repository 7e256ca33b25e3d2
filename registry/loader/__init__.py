"""The loader: pinned adapter versions made resident on a model and switched in place."""

from __future__ import annotations

from registry.loader.roleset import BASE_NAME, RoleSet

__all__ = ["BASE_NAME", "RoleSet"]
