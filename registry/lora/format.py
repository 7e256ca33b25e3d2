"""The PEFT LoRA format: file names, tensor keys, the config and PEFT's rules for patterns.

Everything here is pure (no catalog, store or network); ``inspection`` and the loader share it,
so the publisher and the loader read an adapter by the same rules, in the same bounded time.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import InvalidAdapter
from registry.lora.config import CARD, CONFIG, WEIGHTS, AdapterConfig, parse_config
from registry.lora.files import read_capped
from registry.lora.guard import refusing
from registry.lora.patterns import table

__all__ = ["CARD", "CONFIG", "WEIGHTS", "AdapterConfig", "LoraModule", "read_config"]

MAX_TEXT_BYTES = 1024 * 1024
# PEFT also saves the full base weight of a targeted or resized embedding / output layer.
# Its names are the models' input/output embeddings: Llama-likes, GPT-2/J, GPT-NeoX, BLOOM/Falcon.
EMBEDDING_WEIGHT = re.compile(
    r"^(?:base_model\.model\.)?(?:.+\.)?"
    r"(?:embed_tokens|lm_head|wte|embed_in|embed_out|word_embeddings)"
    r"(?:\.base_layer)?\.(?:weight|bias)$"
)
LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<path>.+?)\."
    r"(?P<kind>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|lora_embedding_B"
    r"|lora_magnitude_vector(?:\.weight)?)$"
)
# At most 9 ASCII digits: a layer index fits any integer column, and int() stays cheap.
_LAYER = re.compile(r"\.([0-9]{1,9})(?:\.|$)")


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


def decode_text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidAdapter(f"{name} is not UTF-8 text") from None


def read_config_bytes(path: Path) -> bytes:
    """The bytes of ``adapter_config.json``; ``parse_config`` checks them."""
    if not os.path.lexists(path):
        raise InvalidAdapter(f"missing {CONFIG}: not a PEFT adapter folder")
    return read_capped(path, MAX_TEXT_BYTES)


@refusing
def read_config(path: Path) -> AdapterConfig:
    """Load and check ``adapter_config.json``: a LORA config, every value typed and in range.

    Raises:
        InvalidAdapter: a missing, oversized, non-JSON or out-of-range config (nothing else).
    """
    return parse_config(read_config_bytes(path))


def pattern_value(patterns: dict[str, Any], path: str, default: Any) -> Any:
    """PEFT's rule for rank_pattern/alpha_pattern: the first key matching a dotted suffix."""
    return table(patterns, field="pattern").value(path, default)


@refusing
def scaling(config: dict[str, Any], path: str, rank: int) -> float:
    """PEFT's scaling of a module: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    if isinstance(config, AdapterConfig):
        alpha = config.alpha_table.value(path, config["lora_alpha"])
    else:
        alpha = pattern_value(config.get("alpha_pattern") or {}, path, config["lora_alpha"])
    alpha = float(alpha)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def rank(config: AdapterConfig, path: str) -> int:
    """PEFT's rank of a module: its rank_pattern value, else ``r``."""
    return int(config.rank_table.value(path, config["r"]))


def layer_of(path: str) -> int | None:
    """The layer index in a module path (``model.layers.3.self_attn.q_proj`` -> 3)."""
    match = _LAYER.search(path)
    return int(match.group(1)) if match else None
