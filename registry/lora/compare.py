"""Exact comparison of two adapters' updates, from folders or loaded modules (pure: no catalog)."""

from __future__ import annotations

from pathlib import Path

from registry.lora.fingerprint import Similarity, similarity
from registry.lora.format import CONFIG, LoraModule, read_config
from registry.lora.inspection import read_modules

Side = tuple[str | None, list[LoraModule]]  # (base model id, modules)


class Diff(Similarity):
    """``stance diff``: the exact cosine of two updates, per module, and what each side is."""

    x: str
    y: str
    base_models: list[str | None]
    warnings: list[str] = []


def read_folder(folder: Path, *, max_weights_bytes: int) -> Side:
    """Base model and validated modules of an adapter folder."""
    modules = read_modules(folder, max_weights_bytes=max_weights_bytes)
    return read_config(folder / CONFIG).get("base_model_name_or_path"), modules


def compare(x: str, left: Side, y: str, right: Side) -> Diff:
    """The exact diff of two loaded adapters, warning when their base models differ."""
    bases = [left[0], right[0]]
    warnings = []
    if bases[0] != bases[1]:
        warnings.append(f"different base models ({bases[0]} vs {bases[1]}): compare with care")
    result = similarity(left[1], right[1])
    return Diff(**result.model_dump(), x=x, y=y, base_models=bases, warnings=warnings)
