"""Pinning: ``stance.toml`` says what a service wants, ``stance.lock`` what it gets, exactly.

The lock names, for every adapter, the exact version, the manifest digest, the base model and
every file's digest, sorted and without timestamps, so it is byte-for-byte stable while nothing
changes. Like Cargo, a locked entry stays put until its wish changes or someone upgrades it,
and a yanked locked version still installs, with a warning.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import tomli_w
from pydantic import BaseModel, ValidationError

from registry.errors import IntegrityError, InvalidSpec, NotFound
from registry.manifest import FileEntry, Manifest
from registry.schemas import Resolution
from registry.spec import LATEST, parse_ref, parse_spec
from registry.transfer.cache import Cache

WANTS = "stance.toml"
LOCK = "stance.lock"
HEADER = "# Written by `stance lock`: exact versions and digests. Do not edit by hand.\n"


class LockedAdapter(BaseModel):
    namespace: str
    name: str
    requested: str
    version: str
    digest: str
    base_model: str | None = None
    files: list[FileEntry]
    hub_repo: str | None = None
    hub_revision: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def spec(self) -> str:
        return f"{self.ref}@{self.version}"

    def resolution(self) -> Resolution:
        """What the loader and the cache need, straight from the lock (no catalog)."""
        return Resolution(yanked=False, **self.model_dump(include=RESOLVED))


# What a lock entry copies from a resolution: everything but the wish it was resolved from.
RESOLVED = set(LockedAdapter.model_fields) - {"requested"}


class Lock(BaseModel):
    version: int = 1
    adapters: list[LockedAdapter] = []

    def find(self, ref: str) -> LockedAdapter:
        namespace, name = parse_ref(ref)
        for entry in self.adapters:
            if (entry.namespace, entry.name) == (namespace, name):
                return entry
        raise NotFound(f"{namespace}/{name} is not in the lock file")

    def pinned(self, spec: str) -> Resolution:
        """What the lock pins for ``spec``, checked: the one rule of every lock-mode reader
        (RoleSet's lock source, the vLLM plugin). Its version, digest, wish or ``latest``."""
        parsed = parse_spec(spec)
        entry = self.find(parsed.ref)
        if parsed.selector not in {entry.version, entry.digest, entry.requested, LATEST}:
            raise NotFound(f"{spec}: the lock pins {entry.spec} ({entry.requested!r})")
        check_manifest(entry)
        return entry.resolution()


def read_wants(path: Path) -> dict[str, str]:
    """``[adapters]`` of stance.toml as {"ns/name": selector}, every entry validated."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"{path} not found: list the adapters a service wants there") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSpec(f"{path} is not valid TOML: {exc}") from None
    table = data.get("adapters")
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise InvalidSpec(f'{path}: expected an [adapters] table of name = "selector" strings')
    wants = {}
    for key, selector in table.items():
        spec = parse_spec(f"{key}@{selector}" if selector else key)
        wants[spec.ref] = spec.selector
    return dict(sorted(wants.items()))


def read_lock(path: Path) -> Lock:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Lock.model_validate(data)
    except FileNotFoundError:
        raise NotFound(f"{path} not found: run `stance lock` first") from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise InvalidSpec(f"{path} is not a valid lock file: {exc}") from None


def render(lock: Lock) -> str:
    data = lock.model_dump(mode="json", exclude_none=True)
    return HEADER + tomli_w.dumps(data)


def write_lock(lock: Lock, path: Path) -> bool:
    """Write atomically; return whether the file changed (an unchanged lock is not rewritten)."""
    text = render(lock)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)
    return True


def lock(
    resolve: Callable[[str], Resolution],
    wants: dict[str, str],
    *,
    previous: Lock | None = None,
    upgrade: Iterable[str] = (),
    upgrade_all: bool = False,
) -> Lock:
    """Resolve each wish; keep a previous pin while its wish is unchanged and not upgraded."""
    again = {"/".join(parse_ref(ref)) for ref in upgrade}
    unknown = again - wants.keys()
    if unknown:
        raise NotFound(f"cannot upgrade {sorted(unknown)}: not in the wishes")
    kept = {entry.ref: entry for entry in (previous.adapters if previous else [])}
    entries = []
    for ref, selector in wants.items():
        old = kept.get(ref)
        if old is not None and old.requested == selector and not upgrade_all and ref not in again:
            entries.append(old)
            continue
        found = resolve(f"{ref}@{selector}")
        entries.append(LockedAdapter(requested=selector, **found.model_dump(include=RESOLVED)))
    return Lock(adapters=sorted(entries, key=lambda e: (e.namespace, e.name)))


def check_manifest(entry: LockedAdapter) -> None:
    """The locked files must hash, as a manifest, to the locked digest (catches hand edits)."""
    actual = Manifest.of(entry.files).digest
    if actual != entry.digest:
        raise IntegrityError(
            f"{entry.spec}: the lock's files make manifest {actual}, but it says {entry.digest}"
        )


def sync(lock_: Lock, cache: Cache, opener: Callable[[str], BinaryIO]) -> list[Path]:
    """Fetch every locked blob into the cache, verified; the version folders, in lock order."""
    folders = []
    for entry in lock_.adapters:
        check_manifest(entry)
        folders.append(cache.version(entry.resolution(), opener))
    return folders


def verify(lock_: Lock, cache: Cache) -> list[str]:
    """Re-hash every cached blob the lock names; the problems found (empty when all is well)."""
    problems = []
    for entry in lock_.adapters:
        try:
            check_manifest(entry)
        except IntegrityError as exc:
            problems.append(exc.message)
        for file in entry.files:
            if not cache.blob_path(file.digest).exists():
                problems.append(f"{entry.spec}: {file.path} is not in the cache (run stance sync)")
                continue
            try:
                cache.verify(file)
            except IntegrityError as exc:
                problems.append(f"{entry.spec}: {exc.message}")
    return problems
