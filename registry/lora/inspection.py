"""Validation and metadata of a PEFT LoRA adapter folder, computed here and never trusted.

``inspect_dir`` is the one gate every publish passes: it refuses pickles before opening them,
checks ``adapter_config.json`` and the safetensors header, pairs every ``lora_A`` with its
``lora_B`` at the configured rank, and only then reads tensors to build the metadata.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from registry.errors import InvalidAdapter
from registry.lora.fingerprint import Fingerprint, compute_fingerprint
from registry.lora.format import (
    CARD,
    CONFIG,
    EMBEDDING_WEIGHT,
    LORA_KEY,
    WEIGHTS,
    LoraModule,
    layer_of,
    pattern_value,
    read_config,
    read_text,
    scaling,
)
from registry.lora.sketch import Sketch, sketch
from registry.lora.weights import DTYPE_NAMES, WeightsFile, open_weights

_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


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
    """The outcome of ``inspect_dir``: the files to publish and what they contain."""

    files: dict[str, Path]
    info: AdapterInfo
    modules: list[LoraModule]
    sketch: Sketch
    warnings: list[str] = field(default_factory=list)


def _refuse_pickles(folder: Path) -> None:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
    if pickles:
        raise InvalidAdapter(
            f"{', '.join(pickles)}: pickle weights are never loaded; convert to safetensors "
            "(load with PEFT, then save_pretrained(dir, safe_serialization=True)) and remove them"
        )


def _group(
    weights: WeightsFile, config: dict[str, Any]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Group tensor names by module path; names outside LoRA must be modules_to_save weights."""
    groups: dict[str, dict[str, str]] = {}
    extra: list[str] = []
    saved = config.get("modules_to_save") or []
    for name in weights.tensors:
        match = LORA_KEY.match(name)
        if match:
            kind = match["kind"].split(".")[0].replace("lora_embedding_", "lora_")
            kind = "bias" if match["kind"] == "lora_B.bias" else kind
            groups.setdefault(match["path"], {})[kind] = name
        elif any(f".{m}." in f".{name}" for m in saved) or EMBEDDING_WEIGHT.match(name):
            extra.append(name)
        else:
            raise InvalidAdapter(f"{WEIGHTS}: unexpected tensor {name} (not a LoRA weight)")
    return groups, extra


def _module(
    weights: WeightsFile, config: dict[str, Any], path: str, names: dict[str, str]
) -> LoraModule:
    missing = {"lora_A", "lora_B"} - names.keys()
    if missing:
        present = ", ".join(sorted(names))
        raise InvalidAdapter(
            f"{WEIGHTS}: module {path} has {present} but no {', '.join(sorted(missing))}"
        )
    a_entry, b_entry = weights.tensors[names["lora_A"]], weights.tensors[names["lora_B"]]
    if len(a_entry.shape) != 2 or len(b_entry.shape) != 2:
        raise InvalidAdapter(f"{WEIGHTS}: module {path}: lora_A and lora_B must be matrices")
    expected = int(pattern_value(config.get("rank_pattern") or {}, path, config["r"]))
    if a_entry.shape[0] != expected or b_entry.shape[1] != expected:
        raise InvalidAdapter(
            f"{WEIGHTS}: module {path} has rank {a_entry.shape[0]} (lora_A {list(a_entry.shape)}, "
            f"lora_B {list(b_entry.shape)}) but the config says r={expected}"
        )
    magnitude = (
        weights.read(names["lora_magnitude_vector"]) if "lora_magnitude_vector" in names else None
    )
    if magnitude is not None and magnitude.shape != (b_entry.shape[0],):
        raise InvalidAdapter(f"{WEIGHTS}: module {path}: DoRA magnitude does not match lora_B rows")
    return LoraModule(
        path=path,
        layer=layer_of(path),
        module=path.rsplit(".", 1)[-1],
        a=weights.read(names["lora_A"]),
        b=weights.read(names["lora_B"]),
        scaling=scaling(config, path, expected),
        magnitude=magnitude,
    )


def _dtype(weights: WeightsFile) -> str:
    counts = Counter(DTYPE_NAMES[e.dtype] for e in weights.tensors.values())
    return ",".join(sorted(counts)) if len(counts) > 1 else next(iter(counts))


@dataclass
class _Parsed:
    config: dict[str, Any]
    weights: WeightsFile
    modules: list[LoraModule]
    files: dict[str, Path]


def _parse(folder: Path, *, max_weights_bytes: int) -> _Parsed:
    if not folder.is_dir():
        raise InvalidAdapter(f"{folder} is not a directory")
    _refuse_pickles(folder)
    config = read_config(folder / CONFIG)
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise InvalidAdapter(f"missing {WEIGHTS}: the registry accepts safetensors weights only")
    weights = open_weights(weights_path, max_bytes=max_weights_bytes)
    groups, extra = _group(weights, config)
    if not groups:
        raise InvalidAdapter(f"{WEIGHTS}: contains no lora_A/lora_B pairs")
    modules = [_module(weights, config, path, names) for path, names in sorted(groups.items())]
    for name in extra:
        weights.read(name)  # modules_to_save weights must be finite too
    files = {CONFIG: folder / CONFIG, WEIGHTS: weights_path}
    if (folder / CARD).is_file():
        read_text(folder / CARD)
        files[CARD] = folder / CARD
    return _Parsed(config, weights, modules, files)


def check_dir(folder: Path, *, max_weights_bytes: int = 4 * 1024**3) -> dict[str, Path]:
    """Validate a folder as ``inspect_dir`` does, without the metadata; the files to publish."""
    return _parse(folder, max_weights_bytes=max_weights_bytes).files


def read_modules(folder: Path, *, max_weights_bytes: int = 4 * 1024**3) -> list[LoraModule]:
    """The validated LoRA modules of a folder, without computing any metadata."""
    return _parse(folder, max_weights_bytes=max_weights_bytes).modules


def inspect_dir(folder: Path, *, max_weights_bytes: int = 4 * 1024**3) -> Inspection:
    """Validate a PEFT LoRA folder and compute its metadata; raise InvalidAdapter on any flaw."""
    parsed = _parse(folder, max_weights_bytes=max_weights_bytes)
    config, weights, modules = parsed.config, parsed.weights, parsed.modules
    fingerprint = compute_fingerprint(modules)
    info = AdapterInfo(
        peft_type="LORA",
        r=int(config["r"]),
        lora_alpha=float(config["lora_alpha"]),
        scaling=scaling(config, "", int(config["r"])),
        use_rslora=bool(config.get("use_rslora")),
        use_dora=bool(config.get("use_dora")),
        target_modules=sorted({m.module for m in modules}),
        layers=sorted({m.layer for m in modules if m.layer is not None}),
        dtype=_dtype(weights),
        parameters=sum(e.numel for e in weights.tensors.values()),
        bytes=weights.size,
        base_model=config.get("base_model_name_or_path"),
        base_revision=config.get("revision"),
        modules_to_save=sorted(config.get("modules_to_save") or []),
        rank_pattern=config.get("rank_pattern") or {},
        alpha_pattern=config.get("alpha_pattern") or {},
        shapes={m.path: [int(m.a.shape[1]), int(m.b.shape[0])] for m in modules},
        fingerprint=fingerprint,
    )
    return Inspection(
        files=parsed.files,
        info=info,
        modules=modules,
        sketch=sketch(modules, norm=fingerprint.total_norm),
        warnings=list(fingerprint.warnings),
    )
