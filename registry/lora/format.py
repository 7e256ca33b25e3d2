"""The PEFT LoRA format: file names, tensor keys, the config and PEFT's rules for patterns.

Everything here is pure (no catalog, store or network); ``inspection`` and the loader share it,
so the publisher and the loader read an adapter by the same rules.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import InvalidAdapter

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
CARD = "README.md"
MAX_TEXT_BYTES = 1024 * 1024
# PEFT also saves the full base weight of a targeted or resized embedding / output layer.
EMBEDDING_WEIGHT = re.compile(
    r"^(?:base_model\.model\.)?(?:.+\.)?(?:embed_tokens|lm_head|wte)(?:\.base_layer)?\.weight$"
)
LORA_KEY = re.compile(
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


def read_text(path: Path) -> str:
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
        config = json.loads(read_text(path))
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


def pattern_value(patterns: dict[str, Any], path: str, default: Any) -> Any:
    """PEFT's rule for rank_pattern/alpha_pattern: a key matches a dotted suffix of the path."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def scaling(config: dict[str, Any], path: str, rank: int) -> float:
    """PEFT's scaling of a module: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    alpha = float(pattern_value(config.get("alpha_pattern") or {}, path, config["lora_alpha"]))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def layer_of(path: str) -> int | None:
    """The layer index in a module path (``model.layers.3.self_attn.q_proj`` -> 3)."""
    match = re.search(r"\.(\d+)(?:\.|$)", path)
    return int(match.group(1)) if match else None
