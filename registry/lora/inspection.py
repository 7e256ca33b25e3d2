"""Validation and metadata of a PEFT LoRA adapter folder, computed here and never trusted.

``inspect_dir`` is the one gate every publish passes: it refuses pickles before opening them,
checks ``adapter_config.json`` and the safetensors header, pairs every ``lora_A`` with its
``lora_B`` at the configured rank, and only then reads tensors to build the metadata.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from registry.errors import InvalidAdapter
from registry.lora.fingerprint import Fingerprint, compute_fingerprint
from registry.lora.sketch import Sketch, sketch
from registry.lora.weights import DTYPE_NAMES, WeightsFile, open_weights

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
CARD = "README.md"
MAX_TEXT_BYTES = 1024 * 1024
# PEFT also saves the full base weight of a targeted or resized embedding / output layer.
_EMBEDDING_WEIGHT = re.compile(
    r"^(?:base_model\.model\.)?(?:.+\.)?(?:embed_tokens|lm_head|wte)(?:\.base_layer)?\.weight$"
)
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<path>.+?)\."
    r"(?P<kind>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|lora_embedding_B"
    r"|lora_magnitude_vector(?:\.weight)?)$"
)


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: ``dW = scaling * b @ a`` with ``a`` (r, d_in) and ``b`` (d_out, r)."""

    path: str
    layer: int | None
    module: str
    a: np.ndarray
    b: np.ndarray
    scaling: float
    magnitude: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


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


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise InvalidAdapter(f"{path.name} is larger than {MAX_TEXT_BYTES} bytes")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidAdapter(f"{path.name} is not UTF-8 text") from None


def _positive_number(config: dict[str, Any], key: str, *, integer: bool) -> Any:
    value = config.get(key)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise InvalidAdapter(f"{CONFIG}: {key} must be {what}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise InvalidAdapter(f"{CONFIG}: {key} must be finite, got {value!r}")
    return value


def read_config(path: Path) -> dict[str, Any]:
    """Load and check ``adapter_config.json``: a LORA config with a rank and an alpha."""
    if not path.is_file():
        raise InvalidAdapter(f"missing {CONFIG}: not a PEFT adapter folder")
    try:
        config = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise InvalidAdapter(
            f"{CONFIG} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if not isinstance(config, dict):
        raise InvalidAdapter(f"{CONFIG} must be a JSON object")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise InvalidAdapter(
            f"{CONFIG}: unsupported peft_type {peft_type!r}; only LORA is supported"
        )
    _positive_number(config, "r", integer=True)
    _positive_number(config, "lora_alpha", integer=False)
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key) or {}
        if not isinstance(pattern, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0
            for v in pattern.values()
        ):
            raise InvalidAdapter(f"{CONFIG}: {key} must map module patterns to positive numbers")
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise InvalidAdapter(f"{CONFIG}: base_model_name_or_path must be a string")
    return config


def _pattern_value(patterns: dict[str, Any], path: str, default: Any) -> Any:
    """PEFT's rule for rank_pattern/alpha_pattern: a key matches a dotted suffix of the path."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def _scaling(config: dict[str, Any], path: str, rank: int) -> float:
    alpha = float(_pattern_value(config.get("alpha_pattern") or {}, path, config["lora_alpha"]))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _layer_of(path: str) -> int | None:
    match = re.search(r"\.(\d+)(?:\.|$)", path)
    return int(match.group(1)) if match else None


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
        match = _LORA_KEY.match(name)
        if match:
            kind = match["kind"].split(".")[0].replace("lora_embedding_", "lora_")
            kind = "bias" if match["kind"] == "lora_B.bias" else kind
            groups.setdefault(match["path"], {})[kind] = name
        elif any(f".{m}." in f".{name}" for m in saved) or _EMBEDDING_WEIGHT.match(name):
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
    expected = int(_pattern_value(config.get("rank_pattern") or {}, path, config["r"]))
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
        layer=_layer_of(path),
        module=path.rsplit(".", 1)[-1],
        a=weights.read(names["lora_A"]),
        b=weights.read(names["lora_B"]),
        scaling=_scaling(config, path, expected),
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
        _read_text(folder / CARD)
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
        scaling=_scaling(config, "", int(config["r"])),
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
