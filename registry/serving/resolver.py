"""Adapters for a running engine, by spec: a verified version folder, or a refusal and why.

An engine asks for a model it has not loaded (``"curious-uncertainty@prod"``); this resolves
the spec through the registry (``STANCE_REGISTRY`` or the embedded one) or, in lock mode
(``STANCE_LOCK``), through stance.lock and the cache alone, checks the namespace and the base
model, and fetches the version into the client cache with every blob checked. Knows nothing of
vLLM: ``vllm_plugin`` wraps it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from registry.connect import Registry
from registry.errors import Forbidden, InvalidAdapter, NotFound, RegistryError
from registry.interfaces import AdapterRegistry
from registry.schemas import Resolution
from registry.settings import Settings
from registry.spec import parse_spec
from registry.transfer.cache import Cache
from registry.transfer.lockfile import Lock, read_lock

log = logging.getLogger(__name__)


class ServingSettings(BaseSettings):
    """What an engine may serve (``STANCE_*``), read where the engine starts."""

    model_config = SettingsConfigDict(env_prefix="STANCE_", extra="ignore")

    # Lock mode: serve only what this stance.lock pins, from the cache, with no catalog.
    lock: Path | None = None
    # Only these namespaces (comma-separated, e.g. "default,team-a"); unset: every namespace.
    vllm_namespaces: Annotated[frozenset[str] | None, NoDecode] = None
    # The base model id adapters must name when the engine serves a local copy of it (vLLM
    # hands resolvers the path it was started with, e.g. /models/smollm2).
    vllm_base_model: str | None = None

    @field_validator("vllm_namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value


@dataclass(frozen=True)
class Served:
    """A version an engine may load: where its verified files are, and a stable id."""

    name: str  # what the engine asked for, and will serve it as
    spec: str  # namespace/name@version
    digest: str
    path: Path

    @property
    def int_id(self) -> int:
        """A positive id that differs between versions (engines key loaded weights on it)."""
        seed = hashlib.sha256(f"{self.name}\0{self.digest}".encode()).digest()
        return int.from_bytes(seed[:7], "big") + 1


class EngineAdapters:
    """Resolves an engine's requests for adapters; safe to call from many threads at once."""

    def __init__(
        self,
        settings: Settings | None = None,
        serving: ServingSettings | None = None,
        *,
        registry: AdapterRegistry | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.serving = serving or ServingSettings()
        self.lock: Lock | None = read_lock(self.serving.lock) if self.serving.lock else None
        self._registry, self._owned = registry, registry is None
        self._opening = threading.Lock()

    def registry(self) -> AdapterRegistry:
        """The registry, opened on first use (an engine's worker processes never need one)."""
        with self._opening:
            if self._registry is None:
                self._registry = Registry(settings=self.settings)
            return self._registry

    def close(self) -> None:
        """Close the registry opened here (vLLM never asks; its process exit does as much)."""
        with self._opening:
            if self._registry is not None and self._owned:
                self._registry.close()
                self._registry = None

    def serve(self, base_model: str, name: str) -> Served | None:
        """``locate``, with a refusal logged in one line and answered None (the engine's
        "no such model")."""
        try:
            return self.locate(base_model, name)
        except RegistryError as exc:
            log.warning("stance: not serving %r: %s", name, " ".join(exc.message.split()))
            return None

    def locate(self, base_model: str, name: str) -> Served:
        """The verified version folder of spec ``name`` for an engine serving ``base_model``.

        Raises:
            RegistryError: not a spec, another namespace, unknown, no version in range, another
                base model, a blob that fails its digest, or the registry unreachable.
        """
        spec = parse_spec(name)
        allowed = self.serving.vllm_namespaces
        if allowed is not None and spec.namespace not in allowed:
            raise Forbidden(
                f"namespace {spec.namespace!r} is not served here "
                f"(STANCE_VLLM_NAMESPACES={','.join(sorted(allowed))})"
            )
        if self.lock is not None:  # no catalog: the lock and the cache alone
            resolution = self.lock.pinned(name)
            cache, opener, resume = Cache(self.settings.cache_dir), _offline, None
        else:
            registry = self.registry()
            resolution = registry.resolve(name)
            cache, opener, resume = (
                Cache(registry.cache.root),
                registry.open_blob,
                registry.open_blob,
            )
            if resolution.yanked:  # only an exact version or digest selects a yanked one
                log.warning(
                    "stance: %s is yanked (%s); serving it because %r pins it exactly",
                    resolution.spec,
                    resolution.yanked_reason or "no reason given",
                    name,
                )
        self._check_base(resolution, base_model)
        # A fresh Cache: it re-hashes every blob it already holds before handing out the folder.
        folder = cache.version(resolution, opener, resume)
        return Served(name, resolution.spec, resolution.digest, folder)

    def _check_base(self, resolution: Resolution, base_model: str) -> None:
        expected = self.serving.vllm_base_model or base_model
        if resolution.base_model is None:
            raise InvalidAdapter(f"{resolution.spec} records no base model; refusing it")
        if resolution.base_model != expected:
            raise InvalidAdapter(
                f"{resolution.spec} was trained on {resolution.base_model!r}, but the engine "
                f"serves {expected!r}"
            )


def _offline(digest: str) -> BinaryIO:
    raise NotFound(
        f"blob {digest} is missing from the cache or fails its digest there: "
        "run `stance sync` with the lock"
    )
