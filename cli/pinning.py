"""``stance lock | sync | verify | export``: from a service's wishes to verified local files."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cli.context import open_registry, settings
from cli.output import emit, errors, stdout, warn
from registry.errors import IntegrityError, RegistryError
from registry.interfaces import AdapterRegistry
from registry.transfer import lockfile
from registry.transfer.cache import Cache
from registry.transfer.lockfile import LOCK, WANTS, Lock

LockOpt = Annotated[Path, typer.Option("--lock", help="The lock file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document.")]


def lock(
    wants: Annotated[Path, typer.Option("--wants", help="The service's wishes")] = Path(WANTS),
    lock_path: LockOpt = Path(LOCK),
    upgrade: Annotated[
        list[str] | None, typer.Option(help="Re-resolve this adapter (repeatable)")
    ] = None,
    upgrade_all: Annotated[bool, typer.Option(help="Re-resolve every adapter")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Resolve stance.toml into stance.lock: exact versions and every file's digest."""
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
            stdout.print(f"{e.ref} {e.requested!r} -> {e.version} {e.digest[:19]}", markup=False)
        stdout.print(f"{lock_path} {'written' if changed else 'unchanged'}")

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
    """Fetch every locked blob into the verified cache."""
    with errors(as_json=as_json), open_registry() as registry:
        locked = lockfile.read_lock(lock_path)
        folders = lockfile.sync(locked, registry.cache, registry.open_blob)
        _warn_yanked(registry, locked)
    result = [
        {"name": e.ref, "version": e.version, "path": str(f)}
        for e, f in zip(locked.adapters, folders, strict=True)
    ]
    emit(
        result,
        as_json=as_json,
        human=lambda: [
            stdout.print(f"{r['name']}@{r['version']} {r['path']}", markup=False) for r in result
        ],
    )


def verify(lock_path: LockOpt = Path(LOCK), as_json: JsonOpt = False) -> None:
    """Re-hash the cache against the lock; exit 1 naming every bad or missing file."""
    with errors(as_json=as_json):
        locked = lockfile.read_lock(lock_path)
        problems = lockfile.verify(locked, Cache(settings().cache_dir))
        if problems:
            raise IntegrityError("; ".join(problems))
    emit(
        {"verified": [e.spec for e in locked.adapters]},
        as_json=as_json,
        human=lambda: stdout.print(f"{len(locked.adapters)} locked adapters verified"),
    )


class Format(StrEnum):
    VLLM = "vllm"
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
) -> None:
    """Print what an inference engine needs to load the locked adapters from the cache."""
    with errors(as_json=False):
        locked = lockfile.read_lock(lock_path)
        if hub:
            print(_hub_snippet(format_, locked.adapters))
            return
        cache_dir = settings().cache_dir
        problems = lockfile.verify(locked, Cache(cache_dir))
        if problems:
            raise IntegrityError("; ".join(problems) + " (run stance sync)")
    folders = {
        e.name: cache_dir / "versions" / e.namespace / e.name / e.version for e in locked.adapters
    }
    bases = sorted({e.base_model or "BASE_MODEL" for e in locked.adapters})
    if format_ is Format.VLLM:
        ranks = [json.loads((f / "adapter_config.json").read_text())["r"] for f in folders.values()]
        modules = " ".join(f"{name}={path}" for name, path in folders.items())
        print(
            f"vllm serve {bases[0]} --enable-lora --max-lora-rank {max(ranks)} "
            f"--max-loras {len(folders)} --lora-modules {modules}"
        )
    elif format_ is Format.LORAX:
        for name, path in folders.items():
            print(json.dumps({"name": name, "adapter_id": str(path), "adapter_source": "local"}))
    else:
        print(_peft_snippet(bases[0], {name: (str(f), None) for name, f in folders.items()}))


def _hub_snippet(format_: Format, adapters: list[lockfile.LockedAdapter]) -> str:
    """The PEFT snippet over the Hub releases of the locked versions (an ``hf://`` store)."""
    if format_ is not Format.PEFT:
        raise typer.BadParameter("--hub works with --format peft only", param_hint="--hub")
    missing = [e.spec for e in adapters if e.hub_repo is None or e.hub_revision is None]
    if missing:
        raise RegistryError(
            f"not released to the Hub: {', '.join(missing)} (published to a store other than hf://)"
        )
    bases = sorted({e.base_model or "BASE_MODEL" for e in adapters})
    return _peft_snippet(bases[0], {e.name: (str(e.hub_repo), e.hub_revision) for e in adapters})


def _peft_snippet(base: str, sources: dict[str, tuple[str, str | None]]) -> str:
    """``sources`` maps adapter names to (folder or Hub repo, commit SHA or None)."""
    lines = [
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        f"base = AutoModelForCausalLM.from_pretrained({base!r})",
    ]
    for index, (name, (where, revision)) in enumerate(sources.items()):
        pinned = f", revision={revision!r}" if revision else ""
        if index == 0:
            lines.append(
                f"model = PeftModel.from_pretrained(base, {where!r}{pinned}, adapter_name={name!r})"
            )
        else:
            lines.append(f"model.load_adapter({where!r}{pinned}, adapter_name={name!r})")
    return "\n".join(lines)
