"""``stance lock | sync | verify | export``: from a service's wishes to verified local files."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.context import embedded_registry, open_registry, settings
from cli.output import JsonOpt, emit, errors, say, stdout, warn
from registry.errors import IntegrityError, RegistryError

if TYPE_CHECKING:  # imported where used: building the CLI must stay cheap (issue 16)
    from registry.catalog.verification import Verification
    from registry.interfaces import AdapterRegistry
    from registry.transfer import lockfile
    from registry.transfer.cache import Cache
    from registry.transfer.lockfile import Lock

# registry.transfer.lockfile's file names (tests/test_cli_startup.py checks they agree).
WANTS, LOCK = "stance.toml", "stance.lock"

LockOpt = Annotated[Path, typer.Option("--lock", help="The lock file")]


def lock(
    wants: Annotated[
        Path, typer.Option("--wants", metavar="FILE", help="The service's wishes")
    ] = Path(WANTS),
    lock_path: LockOpt = Path(LOCK),
    upgrade: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="Re-resolve this adapter (repeatable)"),
    ] = None,
    upgrade_all: Annotated[bool, typer.Option(help="Re-resolve every adapter")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Resolve stance.toml into stance.lock: exact versions and every file's digest."""
    from registry.transfer import lockfile

    with errors(as_json=as_json), open_registry() as registry:
        previous = lockfile.read_lock(lock_path) if lock_path.exists() else None
        new = lockfile.lock(
            registry.resolve,
            lockfile.read_wants(wants),
            previous=previous,
            upgrade=upgrade or (),
            upgrade_all=upgrade_all,
        )
        changed = lockfile.write_lock(new, lock_path)
    summary = {
        "lock": str(lock_path),
        "changed": changed,
        "adapters": [
            {"name": e.ref, "requested": e.requested, "version": e.version, "digest": e.digest}
            for e in new.adapters
        ],
    }

    def human() -> None:
        for e in new.adapters:
            say(f"{e.ref} {e.requested!r} -> {e.version} {e.digest[:19]}")
        say(f"{lock_path} {'written' if changed else 'unchanged'}")

    emit(summary, as_json=as_json, human=human)


def _warn_yanked(registry: AdapterRegistry, lock_: Lock) -> None:
    """Like Cargo: a yanked locked version still installs, but people should hear about it."""
    for entry in lock_.adapters:
        try:
            found = registry.resolve(entry.spec)
        except RegistryError:
            continue  # offline or gone: the lock alone is enough to install
        if found.yanked:
            warn(f"{entry.spec} is yanked: {found.yanked_reason or 'no reason given'}")


def sync(lock_path: LockOpt = Path(LOCK), as_json: JsonOpt = False) -> None:
    """Fetch every locked blob into the verified cache (a corrupt cached copy is fetched again)."""
    from registry.transfer import lockfile

    with errors(as_json=as_json), open_registry() as registry:
        locked = lockfile.read_lock(lock_path)
        folders = lockfile.sync(locked, registry.cache, registry.open_blob)
        _warn_yanked(registry, locked)
    result = [
        {"name": e.ref, "version": e.version, "path": str(f)}
        for e, f in zip(locked.adapters, folders, strict=True)
    ]

    def human() -> None:
        for r in result:
            say(f"{r['name']}@{r['version']} {r['path']}")

    emit(result, as_json=as_json, human=human)


def verify(
    lock_path: LockOpt = Path(LOCK),
    all_: Annotated[
        bool,
        typer.Option(
            "--all", help="Re-hash every published version's blobs in the store (needs the catalog)"
        ),
    ] = False,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Fetch bad or missing cached files again from the registry"),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash the cache against the lock (--all: the store); exit 1 naming every bad file."""
    if all_:
        _verify_store(as_json=as_json)
        return
    from registry.transfer import lockfile
    from registry.transfer.cache import Cache

    with errors(as_json=as_json):
        locked = lockfile.read_lock(lock_path)
        cache = Cache(settings().cache_dir)
        problems = lockfile.verify(locked, cache)
        repaired = _repair(locked, cache) if problems and repair else []
        problems = lockfile.verify(locked, cache) if repaired else problems
        if problems:
            advice = "" if repair else "; stance verify --repair fetches them again"
            raise IntegrityError("; ".join(problems) + advice)
    emit(
        {"verified": [e.spec for e in locked.adapters], "repaired": repaired},
        as_json=as_json,
        human=lambda: say(
            f"{len(locked.adapters)} locked adapters verified"
            + (f"; fetched again: {', '.join(repaired)}" if repaired else "")
        ),
    )


def _repair(locked: Lock, cache: Cache) -> list[str]:
    """Fetch every bad or missing cached file again (sync replaces what fails its digest)."""
    from registry.transfer import lockfile

    bad = []
    for entry in locked.adapters:
        for file in entry.files:
            try:
                cache.verify(file)
            except (IntegrityError, OSError):
                bad.append(f"{entry.spec} {file.path}")
    if bad:
        with open_registry() as registry:
            lockfile.sync(locked, registry.cache, registry.open_blob)
    return bad


def _verify_store(*, as_json: bool) -> None:
    """``verify --all``: with problems, the JSON document lists them beside code and message."""
    with errors(as_json=as_json), embedded_registry("verify --all") as registry:
        result = registry.verify_store()
    if result.ok:
        emit(result, as_json=as_json, human=lambda: stdout.print(result.summary(), markup=False))
        return
    document = {"code": IntegrityError.code, "message": result.summary(), **result.model_dump()}
    emit(document, as_json=as_json, human=lambda: _print_problems(result))
    with errors(as_json=False):  # the JSON document is out: only the error line and exit 1
        raise IntegrityError(result.summary())


def _print_problems(result: Verification) -> None:
    for kind, found in (("missing", result.missing), ("corrupt", result.corrupt)):
        for blob in found:
            stdout.print(f"{kind} {blob.digest} ({', '.join(blob.versions)})", markup=False)
    for spec in result.inconsistent:
        stdout.print(f"inconsistent {spec}: its manifest disagrees with its rows", markup=False)


class Format(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    LORAX = "lorax"
    PEFT = "peft"


def export(
    format_: Annotated[Format, typer.Option("--format", help="Which engine to feed")],
    lock_path: LockOpt = Path(LOCK),
    hub: Annotated[
        bool,
        typer.Option(
            "--hub",
            help="peft only: load from the Hub repos, pinned by commit SHA, not from the cache",
        ),
    ] = False,
    base_model: Annotated[
        str | None,
        typer.Option(metavar="ID", help="The base model, where the lock records none"),
    ] = None,
    copy: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Copy each version (real, verified files) to DIR/<ns>/<name>/<version>",
        ),
    ] = None,
    path_prefix: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="Print paths under PATH: where the cache (or --copy DIR) is mounted in the "
            "engine's container",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print what an inference engine needs to load the locked adapters from the cache."""
    with errors(as_json=as_json):
        text = _export(
            format_, lock_path, hub=hub, base_model=base_model, copy=copy, prefix=path_prefix
        )
    emit({"format": format_.value, "text": text}, as_json=as_json, human=lambda: say(text))


def _export(
    format_: Format,
    lock_path: Path,
    *,
    hub: bool,
    base_model: str | None,
    copy: Path | None,
    prefix: str | None,
) -> str:
    from registry.serving import exports
    from registry.transfer import lockfile
    from registry.transfer.cache import Cache

    locked = lockfile.read_lock(lock_path)
    base = exports.common_base_model(locked.adapters, base_model)
    if hub:
        return _hub_snippet(format_, locked.adapters, base)
    cache = Cache(settings().cache_dir)
    found = exports.prepare(locked, cache, copy_to=copy, path_prefix=prefix)
    if format_ is Format.VLLM:
        return exports.vllm_command(base, found)
    if format_ is Format.SGLANG:
        return exports.sglang_command(base, found)
    if format_ is Format.LORAX:
        return "\n".join(exports.lorax_requests(found))
    return exports.peft_snippet(base, {e.name: (e.path, None) for e in found})


def _hub_snippet(format_: Format, adapters: list[lockfile.LockedAdapter], base: str) -> str:
    """The PEFT snippet over the Hub releases of the locked versions (an ``hf://`` store)."""
    from registry.serving import exports

    if format_ is not Format.PEFT:
        raise typer.BadParameter("--hub works with --format peft only", param_hint="--hub")
    missing = [e.spec for e in adapters if e.hub_repo is None or e.hub_revision is None]
    if missing:
        raise RegistryError(
            f"not released to the Hub: {', '.join(missing)} (published to a store other than hf://)"
        )
    sources = {
        exports.engine_name(e.namespace, e.name): (str(e.hub_repo), e.hub_revision)
        for e in adapters
    }
    return exports.peft_snippet(base, sources)
