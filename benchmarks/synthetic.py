"""Synthetic adapters in PEFT's file layout, written with numpy (no torch) for the benchmarks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
# SmolLM2-135M's q/v shapes: 30 layers, q 576 -> 576, v 576 -> 192.
LAYERS, HIDDEN, KV, R = 30, 576, 192, 8
Factors = Callable[[int, str, int], tuple[np.ndarray, np.ndarray]]  # layer, module, d_out


def random_factors(rng: np.random.Generator, *, d_in: int = HIDDEN, r: int = R) -> Factors:
    """Independent random lora_A (r, d_in) and small lora_B (d_out, r) for every module."""
    return lambda _layer, _module, out: (
        rng.standard_normal((r, d_in), dtype=np.float32),
        0.01 * rng.standard_normal((out, r), dtype=np.float32),
    )


def write_adapter(
    folder: Path,
    factors: Factors,
    *,
    layers: int = LAYERS,
    widths: dict[str, int] | None = None,
    r: int = R,
    base_model: str = BASE,
) -> Path:
    """A q/v LoRA folder (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    widths = widths or {"q_proj": HIDDEN, "v_proj": KV}
    tensors = {}
    for layer in range(layers):
        for module, out in widths.items():
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            a, b = factors(layer, module, out)
            tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = a, b
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": 16,
        "target_modules": sorted(widths),
        "base_model_name_or_path": base_model,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder
