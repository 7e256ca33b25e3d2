"""RoleSet: pinned adapter versions resident on one model, switched, mixed and batched in place."""

from __future__ import annotations

import logging
import math
import queue
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from registry.connect import Registry
from registry.errors import NotFound, RegistryError
from registry.interfaces import AdapterRegistry
from registry.loader.adapter import (
    ModulePlan,
    adapter_dtype,
    model_device,
    model_id,
    plan_adapter,
)
from registry.loader.arena import Arena, Copy, Planned, Staging
from registry.loader.follow import Follower
from registry.loader.sites import BASE, MIX, ONE, ROWS, Site, State, batch_rows, clear, fill
from registry.loader.sources import Source, lock_source, registry_source
from registry.schemas import Resolution
from registry.settings import Settings
from registry.transfer.cache import Cache
from registry.transfer.lockfile import Lock, read_lock

BASE_NAME = "__base__"
log = logging.getLogger(__name__)
PLANS_KEPT = 64


@dataclass
class _Role:
    slot: int
    resolution: Resolution
    sites: list[Site] = field(default_factory=list)


# Buffers made or changed under torch.inference_mode() would refuse later in-place updates
# (and autograd) outside it; whatever mode the caller is in, RoleSet keeps normal tensors.
_normal_tensors = torch.inference_mode(False)


def _default_name(resolution: Resolution) -> str:
    if resolution.namespace == "default":
        return resolution.name
    return f"{resolution.namespace}/{resolution.name}"


class RoleSet:
    """Adapters made resident once on a model's device; switching writes one index.

    Not thread-safe: one RoleSet serves one model, one request at a time (as PEFT does).
    """

    def __init__(
        self,
        model: nn.Module,
        registry: AdapterRegistry | None = None,
        lock: Lock | str | Path | None = None,
        device: torch.device | str | None = None,
        max_resident: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Hook nothing yet; index the model's modules once (the only walk of its tree).

        Args:
            model: a transformers model without PEFT layers.
            registry: where specs resolve; ``None`` means ``Registry()`` (``STANCE_*`` settings).
            lock: a ``stance.lock`` (path or ``Lock``): versions come from it alone, verified
                from the cache, with no catalog; ``registry`` then only fetches missing blobs.
            device: where adapter weights live; default: each adapted module's own device.
            max_resident: evict the least recently used inactive role beyond this many.
            dtype: adapter weights' dtype, the one the LoRA maths runs in; default: PEFT's,
                the model's dtype but float32 on a float16/bfloat16 model.
        """
        if max_resident is not None and max_resident < 1:
            raise RegistryError(f"max_resident must be at least 1, got {max_resident}")
        if hasattr(model, "peft_config"):
            raise RegistryError(
                "RoleSet injects adapters itself: pass the base model, not a PEFT-wrapped one "
                "(PeftModel.unload() returns it)"
            )
        self._owned: AdapterRegistry | None = None
        self._source: Source
        if lock is not None:
            locked = lock if isinstance(lock, Lock) else read_lock(Path(lock))
            cache = registry.cache if registry is not None else Cache(Settings().cache_dir)
            opener = registry.open_blob if registry is not None else None
            self._source = lock_source(locked, cache, opener)
        else:
            if registry is None:
                registry = self._owned = Registry()
            self._source = registry_source(registry)
        self.registry = registry
        self.model = model
        self.max_resident = max_resident
        self._plans: OrderedDict[tuple[str, bool], Planned] = OrderedDict()
        self._updates: queue.SimpleQueue[tuple[str, Resolution, Path]] = queue.SimpleQueue()
        self._modules: dict[str, nn.Module] = dict(model.named_modules())
        self._model_id = model_id(model)
        self._device = torch.device(device) if device is not None else None
        self._dtype = dtype or adapter_dtype(model)
        self._pin = (self._device or model_device(model)).type == "cuda"
        self._state = State()
        self._sites: dict[str, Site] = {}
        self._arenas: dict[torch.device, Arena] = {}
        self._roles: OrderedDict[str, _Role] = OrderedDict()  # least recently used first
        self._slots = 1 + (max_resident or 4)  # slot 0 is the base model: zeros everywhere
        self._free = list(range(self._slots - 1, 0, -1))
        self._active: str | dict[str, float] | None = None
        self._staging = Staging(pin=self._pin)

    def __repr__(self) -> str:
        return f"RoleSet(resident={list(self._roles)}, active={self._active!r})"

    def __len__(self) -> int:
        return len(self._roles)

    def __contains__(self, name: object) -> bool:
        return name in self._roles

    def __enter__(self) -> RoleSet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def active(self) -> str | dict[str, float] | None:
        """The active role's name, the active mixture's weights, or None for the base model."""
        return dict(self._active) if isinstance(self._active, dict) else self._active

    @property
    def resident(self) -> dict[str, Resolution]:
        """Each resident role's pinned version, least recently used first."""
        return {name: role.resolution for name, role in self._roles.items()}

    def load(self, spec: str, name: str | None = None, *, allow_base_mismatch: bool = False) -> str:
        """Make ``spec``'s version resident under ``name``; the same digest again is a no-op.

        Args:
            spec: ``[namespace/]name[@selector]``, resolved now and pinned to its digest.
            name: the role's name; default: the adapter's name (``ns/name`` outside the default
                namespace). A new version under a resident name replaces it (and stays active
                if it was).
            allow_base_mismatch: load onto a model whose id differs from the adapter's base
                model (module shapes are checked regardless).

        Returns:
            The role's name.

        Raises:
            NotFound: no such adapter or version.
            InvalidAdapter: another base model, a missing module, a shape mismatch, or a LoRA
                variant RoleSet does not run (DoRA, LoRA bias, modules_to_save...).
            RegistryError: ``max_resident`` roles are resident and all of them are active.
        """
        resolution, folder = self._source(spec)
        return self._install(resolution, folder, name, allow_base_mismatch=allow_base_mismatch)

    @_normal_tensors
    def _install(
        self, resolution: Resolution, folder: Path, name: str | None, *, allow_base_mismatch: bool
    ) -> str:
        name = name or _default_name(resolution)
        if name == BASE_NAME:
            raise RegistryError(f"{BASE_NAME!r} names the base model; pick another role name")
        old = self._roles.get(name)
        if old is not None and old.resolution.digest == resolution.digest:
            self._roles.move_to_end(name)
            return name
        if resolution.yanked:
            reason = resolution.yanked_reason or "no reason given"
            warnings.warn(f"{resolution.spec} is yanked: {reason}", UserWarning, stacklevel=2)
        planned = self._plan(resolution, folder, allow_base_mismatch=allow_base_mismatch)
        if old is None:
            self._make_room()
        role = _Role(self._claim(), resolution)
        self._copy(planned, role)
        self._roles[name] = role
        self._roles.move_to_end(name)
        if old is not None:
            self._release(old)
            if self._active == name:
                self._state.slot = role.slot
            elif isinstance(self._active, dict) and name in self._active:
                self.mix(self._active)
        return name

    def _plan(self, resolution: Resolution, folder: Path, *, allow_base_mismatch: bool) -> Planned:
        """The checked copy plan of a version; versions are immutable, so it is kept by digest
        (reloading an evicted role then costs little more than reading its bytes)."""
        key = (resolution.digest, allow_base_mismatch)
        planned = self._plans.get(key)
        if planned is None or planned.folder != folder:
            plan = plan_adapter(
                folder,
                self._modules,
                label=resolution.spec,
                model=self._model_id,
                allow_base_mismatch=allow_base_mismatch,
            )
            planned = self._plans[key] = Planned(plan, folder)
            while len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        return planned

    def switch(self, name: str | None) -> None:
        """Activate one resident role (``None`` or ``"__base__"``: the bare base model).

        Costs the same with 2 or 200 roles resident: it writes the index every hook reads;
        nothing is allocated and no module is visited.

        Raises:
            NotFound: ``name`` is not resident.
        """
        state = self._state
        if name is None or name == BASE_NAME:
            state.mode, self._active = BASE, None
            return
        role = self._role(name)
        self._roles.move_to_end(name)
        state.slot = role.slot
        state.mode, self._active = ONE, name

    @_normal_tensors
    def mix(self, weights: Mapping[str, float]) -> None:
        """Activate a weighted mixture: the exact weighted sum of the roles' updates.

        The update is ``sum_i w_i * scaling_i * B_i @ A_i`` (concatenated ranks), built once
        here: PEFT with these adapters active together, each scaling times its weight. PEFT's
        ``add_weighted_adapter(..., "cat")`` differs when its first adapter uses rsLoRA or
        ``layers_to_transform`` (see the README). The roles stay resident and switchable.

        Raises:
            NotFound: a role is not resident.
            RegistryError: no roles, or a weight that is not a finite number.
        """
        if not weights:
            raise RegistryError("mix needs at least one role and its weight")
        parts = []
        for name, weight in weights.items():
            value = float(weight)
            if not math.isfinite(value):
                raise RegistryError(f"mix weight of {name!r} must be finite, got {weight!r}")
            parts.append((self._role(name).slot, value))
        for site in self._sites.values():
            site.set_mix(parts)
        for name in weights:
            self._roles.move_to_end(name)
        self._state.mode, self._active = MIX, dict(weights)

    @_normal_tensors
    def unload(self, name: str) -> None:
        """Free a role's slot for the next load; if it was active, the base model is active.

        Raises:
            NotFound: ``name`` is not resident.
        """
        role = self._role(name)
        if name in self._busy():
            self._deactivate()
        del self._roles[name]
        self._release(role)

    def follow(self, spec: str, *, name: str | None = None, interval: float = 5.0) -> Follower:
        """Keep role ``name`` on whatever ``spec`` (e.g. ``curious@prod``) resolves to.

        A background thread polls the registry (conditional requests); when the answer moves it
        fetches and verifies the new version, and the next ``forward``/``generate`` call swaps it
        in before it runs. Failures keep the old version active and are logged.
        """
        poll = getattr(self.registry, "poll", None)
        if poll is None:
            raise RegistryError("follow needs a registry to watch, not only a lock file")
        role = self.load(spec, name)
        current = self._roles[role].resolution
        registry = cast(AdapterRegistry, self.registry)
        return Follower(
            spec,
            role,
            poll=poll,
            prepare=lambda found: registry.cache.version(
                found, registry.open_blob, resume=registry.open_blob
            ),
            deliver=lambda found, folder: self._updates.put((role, found, folder)),
            digest=current.digest,
            interval=interval,
        )

    def apply_updates(self) -> list[str]:
        """Swap in versions that followers have fetched and verified; the roles updated.

        Called by ``forward`` and ``generate`` before they run, so no pass sees half a swap;
        call it yourself if you drive ``roles.model`` directly.
        """
        updated = []
        while not self._updates.empty():
            name, found, folder = self._updates.get_nowait()
            try:
                self._install(found, folder, name, allow_base_mismatch=False)
            except RegistryError as exc:
                log.warning("keeping %s: cannot load %s: %s", name, found.spec, exc)
            else:
                updated.append(name)
        return updated

    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """The model's forward; ``adapter_names`` gives each row its role (``"__base__"``: none)."""
        if not self._updates.empty():
            self.apply_updates()
        if adapter_names is None:
            return self.model(*args, **kwargs)
        with self._batch(adapter_names, expand=False, batch=batch_rows(args, kwargs)):
            return self.model(*args, **kwargs)

    __call__ = forward

    def generate(
        self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any
    ) -> Any:
        """``model.generate``; ``adapter_names`` as in ``forward``, repeated for beams/samples."""
        if not self._updates.empty():
            self.apply_updates()
        generate: Callable[..., Any] = self.model.generate  # type: ignore[assignment]
        if adapter_names is None:
            return generate(*args, **kwargs)
        with self._batch(adapter_names, expand=True, batch=batch_rows(args, kwargs)):
            return generate(*args, **kwargs)

    def close(self) -> None:
        """Remove every hook and free every buffer: the model is the bare base model again."""
        if self._owned is not None:
            self._owned.close()
        for site in self._sites.values():
            site.handle.remove()
        self._sites.clear()
        self._arenas.clear()
        self._plans.clear()
        self._roles.clear()
        self._state.mode, self._active = BASE, None
        self._staging.clear()

    def _forget_views(self) -> None:
        """Views of a staging buffer that was replaced (it may hold older bytes)."""
        for planned in self._plans.values():
            planned.views = None

    def _role(self, name: str) -> _Role:
        role = self._roles.get(name)
        if role is None:
            resident = ", ".join(self._roles) or "none"
            raise NotFound(f"role {name!r} is not resident (resident: {resident})")
        return role

    def _busy(self) -> set[str]:
        active = self._active
        return set(active) if isinstance(active, dict) else {active} if active else set()

    def _deactivate(self) -> None:
        self.switch(None)
        for site in self._sites.values():
            site.mix = None

    def _make_room(self) -> None:
        """Evict the least recently used inactive role when ``max_resident`` is reached."""
        if self.max_resident is None or len(self._roles) < self.max_resident:
            return
        busy = self._busy()
        victim = next((name for name in self._roles if name not in busy), None)
        if victim is None:
            raise RegistryError(
                f"max_resident={self.max_resident} roles are resident and all are active; "
                "switch away from one or unload it first"
            )
        self._release(self._roles.pop(victim))

    def _claim(self) -> int:
        """A free slot; when none is left every site doubles its slots (at load, never switch)."""
        if not self._free:
            grown = 2 * self._slots
            for arena in self._arenas.values():
                arena.resize(grown)
            self._free = list(range(grown - 1, self._slots - 1, -1))
            self._slots = grown
        return self._free.pop()

    def _release(self, role: _Role) -> None:
        clear(role.sites, role.slot)
        for arena in self._arenas.values():
            arena.clear(role.slot)
        self._free.append(role.slot)

    def _arena(self, module: ModulePlan) -> Arena:
        weight = getattr(module.module, "weight", None)
        home = weight.device if isinstance(weight, torch.Tensor) else torch.device("cpu")
        device = self._device or home
        arena = self._arenas.get(device)
        if arena is None:
            arena = Arena(slots=self._slots, device=device, dtype=self._dtype)
            self._arenas[device] = arena
        return arena

    def _arranged(self, planned: Planned) -> list[tuple[Arena, int, list[Copy]]]:
        """The copies filling a slot with the plan's weights, first making room in the arenas.

        Sites new to an arena are laid out in the file's order, so the adapters that share
        this one's shape (a team's stances) are each copied in one run.
        """
        copies = planned.copies
        if copies is not None and all(arena.generation == g for arena, g, _ in copies):
            return copies
        groups: dict[Arena, list[tuple[ModulePlan, Site]]] = {}
        for module in sorted(planned.plan.modules, key=lambda m: m.a.start):
            site = self._sites.get(module.path)
            if site is None:
                site = Site(
                    module.module, module.d_in, module.d_out, state=self._state, path=module.path
                )
                self._sites[module.path] = site
            groups.setdefault(self._arena(module), []).append((module, site))
        for arena, pairs in groups.items():
            arena.fit([(site, module.rank) for module, site in pairs])
        planned.sites = [self._sites[module.path] for module in planned.plan.modules]
        planned.fills = [
            (site, module.rank, module.scaling)
            for module, site in zip(planned.plan.modules, planned.sites, strict=True)
        ]
        planned.copies = copies = [
            (arena, arena.generation, arena.copies(pairs)) for arena, pairs in groups.items()
        ]
        planned.views = None
        return copies

    def _copy(self, planned: Planned, role: _Role) -> None:
        """Read the file once, then copy its runs of lora_A/lora_B straight into the slot."""
        plan = planned.plan
        try:
            arranged = self._arranged(planned)
            data = self._read(plan.weights, plan.size)
            for (arena, _, copies), sources in zip(arranged, planned.sources(data), strict=True):
                row = arena.data[role.slot]
                for copy, source in zip(copies, sources, strict=True):
                    copy.into(row, source)
            role.sites = planned.sites
            fill(planned.fills, role.slot)
            # The staging buffer is reused: wait for the asynchronous host-to-GPU copies.
            for arena, _, _ in arranged:
                if arena.device.type == "cuda":
                    torch.cuda.current_stream(arena.device).synchronize()
        except BaseException:
            self._release(role)
            raise

    def _read(self, path: Path, size: int) -> torch.Tensor:
        data, grown = self._staging.read(path, size)
        if grown:  # views of the old buffer are stale
            self._forget_views()
        return data

    @contextmanager
    def _batch(self, names: Sequence[str], *, expand: bool, batch: int | None) -> Iterator[None]:
        """Give each row its role for one call; refused before the forward on a count mismatch,
        and the eviction order moves only when the call succeeded."""
        if not names:
            raise RegistryError("adapter_names must name one role (or '__base__') per row")
        rows = [0 if name == BASE_NAME else self._role(name).slot for name in names]
        if batch is not None and batch != len(names):
            raise RegistryError(
                f"adapter_names has {len(names)} entries but the batch has {batch} rows; "
                "give one name per row"
            )
        state = self._state
        saved = state.mode
        state.set_rows(rows, expand=expand)
        state.mode = ROWS
        try:
            yield
        finally:
            state.mode = saved
            state.set_rows([], expand=False)
        for name in dict.fromkeys(names):
            if name != BASE_NAME:
                self._roles.move_to_end(name)
