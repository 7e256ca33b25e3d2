"""What inference engines need to load the locked adapters, in forms their own parsers accept.

vLLM's argument parser (``--lora-modules``, ``--max-lora-rank``), SGLang's ``--lora-paths``
action, LoRAX's request parameters and PEFT. tests/serving runs every command through vLLM's
and SGLang's own parsers.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from registry.errors import Conflict, IntegrityError, InvalidAdapter, NotFound
from registry.manifest import digest_file, digest_stream
from registry.spec import DEFAULT_NAMESPACE
from registry.transfer.cache import Cache
from registry.transfer.lockfile import Lock, LockedAdapter, verify

# The only values vLLM's --max-lora-rank accepts: ``MaxLoRARanks`` in vllm/config/lora.py
# (vLLM 0.33.0). tests/serving reads the list from vLLM itself and fails when it changes.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def engine_name(namespace: str, name: str) -> str:
    """The name an engine serves an adapter under: its own ``[namespace/]name``.

    Names never contain ``/``, so ``engaged-difficulty`` and ``team-a/engaged-difficulty`` stay
    distinct; it is also what a client sends as ``model`` to reach the resolver plugin.
    """
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"


def largest_rank(config: dict[str, Any]) -> int:
    """The largest LoRA rank anywhere in an adapter: ``r`` and every ``rank_pattern`` value."""
    pattern = config.get("rank_pattern") or {}
    return max([int(config["r"]), *(int(r) for r in pattern.values())])


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank``."""
    for allowed in VLLM_MAX_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise InvalidAdapter(
        f"rank {rank} is above the largest --max-lora-rank vLLM accepts ({VLLM_MAX_LORA_RANKS[-1]})"
    )


def common_base_model(adapters: Iterable[LockedAdapter], override: str | None = None) -> str:
    """The one base model every adapter was trained on (an engine serves one).

    Raises:
        InvalidAdapter: the adapters name two base models, one disagrees with ``override``,
            or none records one and no ``override`` is given.
    """
    by_base: dict[str, list[str]] = {}
    unknown = []
    for entry in adapters:
        if entry.base_model:
            by_base.setdefault(entry.base_model, []).append(entry.spec)
        else:
            unknown.append(entry.spec)
    if len(by_base) > 1:
        listed = "; ".join(f"{base}: {', '.join(specs)}" for base, specs in sorted(by_base.items()))
        raise InvalidAdapter(
            f"the lock mixes base models ({listed}); an engine serves one: lock each apart"
        )
    recorded = next(iter(by_base), None)
    if override and recorded and override != recorded:
        raise InvalidAdapter(
            f"the locked adapters were trained on {recorded!r}, not {override!r} (--base-model)"
        )
    base = override or recorded
    if base is None:
        raise InvalidAdapter(
            f"no base model recorded for {', '.join(unknown) or 'any adapter'}: "
            "give it with --base-model"
        )
    return base


@dataclass(frozen=True)
class Exported:
    """One locked version as an engine will see it."""

    name: str
    path: str
    rank: int
    entry: LockedAdapter


def _offline(digest: str) -> BinaryIO:
    raise NotFound(f"blob {digest} is not in the cache (run stance sync)")


def prepare(
    lock: Lock, cache: Cache, *, copy_to: Path | None = None, path_prefix: str | None = None
) -> list[Exported]:
    """Every locked version verified in the cache (copied out with ``copy_to``), with its name,
    rank and the path an engine should open (under ``path_prefix`` where the cache, or
    ``copy_to``, is mounted in the engine's container)."""
    problems = verify(lock, cache)
    if problems:
        raise IntegrityError("; ".join(problems) + " (run stance sync)")
    exported = []
    for entry in lock.adapters:
        folder = cache.version(entry.resolution(), _offline)
        root = cache.root
        if copy_to is not None:
            root = copy_to.resolve()
            folder = copy_version(cache, entry, root / entry.namespace / entry.name / entry.version)
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        where = str(folder.absolute())
        if path_prefix is not None:
            where = str(PurePosixPath(path_prefix, *folder.relative_to(root).parts))
        name = engine_name(entry.namespace, entry.name)
        exported.append(Exported(name, where, largest_rank(config), entry))
    return exported


def copy_version(cache: Cache, entry: LockedAdapter, dest: Path) -> Path:
    """Real, verified copies of a version's files in ``dest`` (no links into ``blobs/``), so the
    folder alone can be mounted into a container; a complete earlier copy is kept as it is."""
    if dest.exists():
        if _holds(dest, entry):
            return dest
        raise Conflict(f"{dest} exists with other content: remove it or copy somewhere else")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        staged = Path(tmp) / "files"
        staged.mkdir()
        for file in entry.files:
            source, target = cache.blob_path(file.digest), staged / file.path
            with source.open("rb") as blob, target.open("wb") as out:
                actual, _ = digest_stream(blob, out=out)
            if actual != file.digest:
                raise IntegrityError(
                    f"{entry.spec}: {file.path} in the cache hashes to {actual}, "
                    f"expected {file.digest}"
                )
        os.replace(staged, dest)
    return dest


def _holds(folder: Path, entry: LockedAdapter) -> bool:
    files = {p.name for p in folder.iterdir()}
    if files != {f.path for f in entry.files}:
        return False
    return all(
        not (folder / f.path).is_symlink() and digest_file(folder / f.path)[0] == f.digest
        for f in entry.files
    )


def vllm_command(base: str, exported: list[Exported]) -> str:
    """``vllm serve``: modules in vLLM's JSON form (any path), the rank rounded up to one vLLM
    accepts, every word shell-quoted."""
    rank = vllm_max_lora_rank(max(e.rank for e in exported))
    modules = [
        json.dumps({"name": e.name, "path": e.path, "base_model_name": base}) for e in exported
    ]
    words = ["vllm", "serve", base, "--enable-lora", "--max-lora-rank", str(rank)]
    words += ["--max-loras", str(len(exported)), "--lora-modules", *modules]
    return shlex.join(words)


def sglang_command(base: str, exported: list[Exported]) -> str:
    """``sglang.launch_server`` with ``--lora-paths`` in SGLang's JSON form, shell-quoted."""
    paths = [
        json.dumps({"lora_name": e.name, "lora_path": e.path, "pinned": False}) for e in exported
    ]
    words = ["python", "-m", "sglang.launch_server", "--model-path", base, "--enable-lora"]
    words += ["--max-lora-rank", str(max(e.rank for e in exported))]
    words += ["--max-loras-per-batch", str(len(exported)), "--lora-paths", *paths]
    return shlex.join(words)


def lorax_requests(exported: list[Exported]) -> list[str]:
    """One JSON line per adapter: the ``adapter_id``/``adapter_source`` a LoRAX request sends."""
    return [
        json.dumps({"name": e.name, "adapter_id": e.path, "adapter_source": "local"})
        for e in exported
    ]


def peft_name(name: str) -> str:
    """PEFT keeps adapters in ``ModuleDict``s, whose keys may not hold a ``.``."""
    return name.replace(".", "_")


def peft_snippet(base: str, sources: dict[str, tuple[str, str | None]]) -> str:
    """Python that loads every adapter with PEFT; ``sources`` maps engine names to (folder or
    Hub repo, commit SHA or None)."""
    names = [peft_name(name) for name in sources]
    if len(set(names)) < len(names):
        raise InvalidAdapter(
            f"these adapters share a PEFT adapter name once '.' becomes '_': {sorted(sources)}"
        )
    lines = [
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        f"base = AutoModelForCausalLM.from_pretrained({base!r})",
    ]
    for index, (name, (where, revision)) in enumerate(zip(names, sources.values(), strict=True)):
        pinned = f", revision={revision!r}" if revision else ""
        if index == 0:
            lines.append(
                f"model = PeftModel.from_pretrained(base, {where!r}{pinned}, adapter_name={name!r})"
            )
        else:
            lines.append(f"model.load_adapter({where!r}{pinned}, adapter_name={name!r})")
    return "\n".join(lines)
