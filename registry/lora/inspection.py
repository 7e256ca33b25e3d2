"""Validation and metadata of a PEFT LoRA adapter folder, computed here and never trusted.

``inspect_dir`` is the one gate every publish passes: it refuses pickles before opening them,
checks ``adapter_config.json`` and the safetensors header, pairs every ``lora_A`` with its
``lora_B`` at the configured rank, and only then reads tensors, one module at a time, to build
the metadata. Every tensor of the file is read and checked (``lora_B.bias`` and saved modules
too). The public functions raise ``InvalidAdapter`` and nothing else (``guard.refusing``).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from registry.errors import InvalidAdapter
from registry.lora.config import AdapterConfig, parse_config
from registry.lora.files import read_capped
from registry.lora.fingerprint import (
    Fingerprint,
    ModuleFingerprint,
    module_fingerprint,
    summarise,
)
from registry.lora.format import (
    CARD,
    CONFIG,
    EMBEDDING_WEIGHT,
    LORA_KEY,
    MAX_TEXT_BYTES,
    WEIGHTS,
    LoraModule,
    decode_text,
    layer_of,
    rank,
    read_config_bytes,
    scaling,
)
from registry.lora.guard import refusing
from registry.lora.sketch import Sketch, sketch_row
from registry.lora.weights import DTYPE_NAMES, WeightsFile, open_weights
from registry.manifest import FileEntry, Manifest, digest_bytes

_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
# A module path deeper than this is no PyTorch model's; it bounds pattern matching per path.
MAX_COMPONENTS = 64
DEFAULT_MAX_WEIGHTS = 4 * 1024**3


class AdapterInfo(BaseModel):
    """What the registry records about a version, derived from its files alone."""

    peft_type: str
    r: int
    lora_alpha: float
    scaling: float
    use_rslora: bool
    use_dora: bool
    target_modules: list[str]
    layers: list[int]
    dtype: str
    parameters: int
    bytes: int
    base_model: str | None
    base_revision: str | None
    modules_to_save: list[str]
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    shapes: dict[str, list[int]]
    fingerprint: Fingerprint


@dataclass
class Inspection:
    """The outcome of ``inspect_dir``: the files to publish, their digests and what they hold.

    ``digests`` are of the bytes that were validated; publish ``manifest`` (not a fresh hash
    of ``files``), and a file changed since then fails the store's digest check on upload.
    """

    files: dict[str, Path]
    info: AdapterInfo
    sketch: Sketch
    digests: dict[str, tuple[str, int]]
    warnings: list[str] = field(default_factory=list)
    reread: Callable[[], list[LoraModule]] | None = field(default=None, repr=False)

    @functools.cached_property
    def modules(self) -> list[LoraModule]:
        """The validated modules, read again on first use (inspection keeps no tensors)."""
        if self.reread is None:
            raise InvalidAdapter("this inspection has no folder to read modules from")
        return self.reread()

    @property
    def manifest(self) -> Manifest:
        return Manifest.of(
            FileEntry(path=name, digest=digest, size=size)
            for name, (digest, size) in self.digests.items()
        )


@dataclass(frozen=True)
class _Plan:
    """One module's tensor names by kind (lora_A, lora_B, bias, lora_magnitude_vector)."""

    path: str
    names: dict[str, str]
    rank: int


@dataclass
class _Parsed:
    config: AdapterConfig
    config_bytes: bytes
    weights: WeightsFile
    plans: list[_Plan]
    extra: list[str]
    files: dict[str, Path]


def _refuse_pickles(folder: Path) -> None:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
    if pickles:
        raise InvalidAdapter(
            f"{', '.join(pickles)}: pickle weights are never loaded; convert to safetensors "
            "(load with PEFT, then save_pretrained(dir, safe_serialization=True)) and remove them"
        )


def _check_path(name: str) -> None:
    parts = name.split(".")
    if len(parts) > MAX_COMPONENTS or not all(parts):
        raise InvalidAdapter(
            f"{WEIGHTS}: tensor {name[:120]} is not a dotted module path (empty parts, or more "
            f"than {MAX_COMPONENTS})"
        )


def _group(
    weights: WeightsFile, config: AdapterConfig
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Group tensor names by module path; names outside LoRA must be modules_to_save weights."""
    groups: dict[str, dict[str, str]] = {}
    extra: list[str] = []
    for name in weights.tensors:
        _check_path(name)
        match = LORA_KEY.match(name)
        if match:
            kind = match["kind"].split(".")[0].replace("lora_embedding_", "lora_")
            kind = "bias" if match["kind"] == "lora_B.bias" else kind
            names = groups.setdefault(match["path"], {})
            if kind in names:
                raise InvalidAdapter(
                    f"{WEIGHTS}: module {match['path']} has two {kind} tensors "
                    f"({names[kind]} and {name})"
                )
            names[kind] = name
        elif config.saved.covers(name) or EMBEDDING_WEIGHT.match(name):
            extra.append(name)
        else:
            raise InvalidAdapter(f"{WEIGHTS}: unexpected tensor {name} (not a LoRA weight)")
    return groups, extra


def _plan(weights: WeightsFile, config: AdapterConfig, path: str, names: dict[str, str]) -> _Plan:
    """Check one module's shapes against each other and the config, before reading a byte."""
    missing = {"lora_A", "lora_B"} - names.keys()
    if missing:
        present = ", ".join(sorted(names))
        raise InvalidAdapter(
            f"{WEIGHTS}: module {path} has {present} but no {', '.join(sorted(missing))}"
        )
    a, b = weights.tensors[names["lora_A"]].shape, weights.tensors[names["lora_B"]].shape
    if len(a) != 2 or len(b) != 2:
        raise InvalidAdapter(f"{WEIGHTS}: module {path}: lora_A and lora_B must be matrices")
    expected = rank(config, path)
    if a[0] != expected or b[1] != expected:
        raise InvalidAdapter(
            f"{WEIGHTS}: module {path} has rank {a[0]} (lora_A {list(a)}, lora_B {list(b)}) but "
            f"the config says r={expected}"
        )
    for kind, what in (("bias", "lora_B bias"), ("lora_magnitude_vector", "DoRA magnitude")):
        if kind in names and weights.tensors[names[kind]].shape != (b[0],):
            raise InvalidAdapter(f"{WEIGHTS}: module {path}: {what} does not match lora_B rows")
    return _Plan(path, names, expected)


def _load(weights: WeightsFile, config: AdapterConfig, plan: _Plan) -> LoraModule:
    names = plan.names
    if "bias" in names:
        weights.check(names["bias"])  # read and checked, though no figure uses it
    magnitude = names.get("lora_magnitude_vector")
    return LoraModule(
        path=plan.path,
        layer=layer_of(plan.path),
        module=plan.path.rsplit(".", 1)[-1],
        a=weights.read(names["lora_A"]),
        b=weights.read(names["lora_B"]),
        scaling=scaling(config, plan.path, plan.rank),
        magnitude=None if magnitude is None else weights.read(magnitude),
    )


@contextmanager
def _parsed(folder: Path, max_weights_bytes: int) -> Iterator[_Parsed]:
    """Config, header and module plans checked; the weights file open for reading tensors."""
    if not folder.is_dir():
        raise InvalidAdapter(f"{folder} is not a directory")
    _refuse_pickles(folder)
    config_bytes = read_config_bytes(folder / CONFIG)
    config = parse_config(config_bytes)
    weights_path = folder / WEIGHTS
    if not os.path.lexists(weights_path):
        raise InvalidAdapter(f"missing {WEIGHTS}: the registry accepts safetensors weights only")
    with open_weights(weights_path, max_bytes=max_weights_bytes) as weights:
        groups, extra = _group(weights, config)
        if not groups:
            raise InvalidAdapter(f"{WEIGHTS}: contains no lora_A/lora_B pairs")
        plans = [_plan(weights, config, path, names) for path, names in sorted(groups.items())]
        files = {CONFIG: folder / CONFIG, WEIGHTS: weights_path}
        yield _Parsed(config, config_bytes, weights, plans, extra, files)


def _modules(parsed: _Parsed) -> Iterator[LoraModule]:
    """Each module read and checked in turn; then every other tensor, a chunk at a time."""
    for plan in parsed.plans:
        yield _load(parsed.weights, parsed.config, plan)
    for name in parsed.extra:
        parsed.weights.check(name)  # modules_to_save weights must be finite too


def _card(folder: Path) -> bytes | None:
    path = folder / CARD
    if not os.path.lexists(path):
        return None
    data = read_capped(path, MAX_TEXT_BYTES)
    decode_text(data, CARD)
    return data


@refusing
def check_dir(folder: Path, *, max_weights_bytes: int = DEFAULT_MAX_WEIGHTS) -> dict[str, Path]:
    """Validate a folder as ``inspect_dir`` does, without the metadata; the files to publish."""
    with _parsed(folder, max_weights_bytes) as parsed:
        for _ in _modules(parsed):
            pass
        files = parsed.files
    if _card(folder) is not None:
        files[CARD] = folder / CARD
    return files


@refusing
def read_modules(folder: Path, *, max_weights_bytes: int = DEFAULT_MAX_WEIGHTS) -> list[LoraModule]:
    """The validated LoRA modules of a folder (all in memory), without computing metadata."""
    with _parsed(folder, max_weights_bytes) as parsed:
        return list(_modules(parsed))


def _info(parsed: _Parsed, fingerprint: Fingerprint, shapes: dict[str, list[int]]) -> AdapterInfo:
    config, weights = parsed.config, parsed.weights
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    counts = Counter(DTYPE_NAMES[e.dtype] for e in weights.tensors.values())
    return AdapterInfo(
        peft_type="LORA",
        r=r,
        lora_alpha=alpha,
        scaling=alpha / r**0.5 if config.get("use_rslora") else alpha / r,
        use_rslora=bool(config.get("use_rslora")),
        use_dora=bool(config.get("use_dora")),
        target_modules=sorted({m.module for m in fingerprint.modules}),
        layers=sorted({m.layer for m in fingerprint.modules if m.layer is not None}),
        dtype=",".join(sorted(counts)),
        parameters=sum(e.numel for e in weights.tensors.values()),
        bytes=weights.size,
        base_model=config.get("base_model_name_or_path"),
        base_revision=config.get("revision"),
        modules_to_save=sorted(config.get("modules_to_save") or []),
        rank_pattern=config.get("rank_pattern") or {},
        alpha_pattern=config.get("alpha_pattern") or {},
        shapes=shapes,
        fingerprint=fingerprint,
    )


@refusing
def inspect_dir(folder: Path, *, max_weights_bytes: int = DEFAULT_MAX_WEIGHTS) -> Inspection:
    """Validate a PEFT LoRA folder and compute its metadata.

    Memory stays near one module's tensors: each module is read, fingerprinted, sketched and
    dropped before the next.

    Raises:
        InvalidAdapter: on any flaw, and in place of any other exception.
    """
    figures: list[ModuleFingerprint] = []
    rows: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    with _parsed(folder, max_weights_bytes) as parsed:
        for module in _modules(parsed):
            figures.append(module_fingerprint(module))
            rows[module.path] = sketch_row(module)
            shapes[module.path] = [int(module.a.shape[1]), int(module.b.shape[0])]
            del module
        fingerprint = summarise(figures)
        digests = {
            CONFIG: (digest_bytes(parsed.config_bytes), len(parsed.config_bytes)),
            WEIGHTS: (parsed.weights.digest(), parsed.weights.size),
        }
        info = _info(parsed, fingerprint, shapes)
        files = parsed.files
    card = _card(folder)
    if card is not None:
        files[CARD] = folder / CARD
        digests[CARD] = (digest_bytes(card), len(card))
    return Inspection(
        files=files,
        info=info,
        sketch=Sketch(rows, fingerprint.total_norm),
        digests=digests,
        warnings=list(fingerprint.warnings),
        reread=functools.partial(read_modules, folder, max_weights_bytes=max_weights_bytes),
    )
