"""Exact comparison of adapters' updates, from folders or loaded modules (pure: no catalog).

``compare`` is ``stance diff`` (two adapters, per module); ``compare_many`` is ``stance
compare`` (N adapters: the cosine matrix, and per layer the update's norm next to the raw
``||A||`` that a reading of the parameters alone would report).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from registry.errors import InvalidSpec
from registry.lora.fingerprint import Fingerprint, Similarity, compute_fingerprint, similarity
from registry.lora.format import CONFIG, LoraModule, read_config
from registry.lora.inspection import read_modules

Side = tuple[str | None, list[LoraModule]]  # (base model id, modules)
# Each side is read in full (weights verified, every pair scored): a bound on the work a
# request may ask for, and on a matrix a person can read.
MAX_COMPARED = 8


class Diff(Similarity):
    """``stance diff``: the exact cosine of two updates, per module, and what each side is."""

    x: str
    y: str
    base_models: list[str | None]
    warnings: list[str] = []


class LayerNorms(BaseModel):
    """One layer of one adapter: its update's norm, and the raw parameters' norms."""

    layer: int
    delta_norm: float  # ||dW||_F over the layer's modules (root sum of squares)
    a_norm: float  # raw ||A||_F, the same way: sqrt(2r/3) at PEFT's init for two modules
    b_norm: float


class ComparedAdapter(BaseModel):
    """What ``stance compare`` shows of each adapter."""

    spec: str
    base_model: str | None
    r: int
    total_norm: float
    layers: list[LayerNorms]
    layer_cv: float  # coefficient of variation of delta_norm across layers
    a_layer_cv: float  # the same for the raw a_norm: near 0 whatever was learned
    top_layers: list[int]
    energy: list[float]  # share of ||dW||^2 kept when every module is cut to rank k = 1..r
    rank_90: int  # the smallest k keeping 90% of ||dW||^2 (and 99%)
    rank_99: int
    warnings: list[str] = []


class Comparison(BaseModel):
    """``stance compare``: N adapters side by side, and the cosines of every pair."""

    specs: list[str]
    adapters: list[ComparedAdapter]
    cosine: list[list[float]]  # cosine[i][j] of the whole updates, exact
    warnings: list[str] = []


def check_count(specs: Sequence[str]) -> None:
    """Refuse a comparison of too few or too many adapters before any weight is read."""
    if not 2 <= len(specs) <= MAX_COMPARED:
        raise InvalidSpec(f"compare takes 2 to {MAX_COMPARED} adapters, got {len(specs)}")


def read_folder(folder: Path, *, max_weights_bytes: int) -> Side:
    """Base model and validated modules of an adapter folder."""
    modules = read_modules(folder, max_weights_bytes=max_weights_bytes)
    return read_config(folder / CONFIG).get("base_model_name_or_path"), modules


def _base_warnings(bases: Sequence[str | None]) -> list[str]:
    if len(set(bases)) <= 1:
        return []
    shown = " vs ".join(str(b) for b in dict.fromkeys(bases))
    return [f"different base models ({shown}): compare with care"]


def compare(x: str, left: Side, y: str, right: Side) -> Diff:
    """The exact diff of two loaded adapters, warning when their base models differ."""
    bases = [left[0], right[0]]
    result = similarity(left[1], right[1])
    return Diff(**result.model_dump(), x=x, y=y, base_models=bases, warnings=_base_warnings(bases))


def _cv(values: Sequence[float]) -> float:
    # As Fingerprint.layer_cv: population std over the mean, 0 for no or zero values.
    mean = sum(values) / len(values) if values else 0.0
    if mean <= 0.0:
        return 0.0
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / mean


def _energy(fingerprint: Fingerprint) -> list[float]:
    """The adapter's energy curve: each module's curve weighted by its share of ||dW||^2."""
    modules = fingerprint.modules
    rank = max((m.rank for m in modules), default=0)
    total = sum(m.delta_norm**2 for m in modules)
    if total <= 0.0:
        return [0.0] * rank
    return [
        sum(
            m.delta_norm**2 * (m.energy[min(k, len(m.energy)) - 1] if m.energy else 0.0)
            for m in modules
        )
        / total
        for k in range(1, rank + 1)
    ]


def _rank_for(energy: Sequence[float], share: float) -> int:
    """The smallest rank keeping ``share`` of ||dW||^2; 0 for a zero update (nothing to keep)."""
    if not energy or energy[-1] <= 0.0:
        return 0
    return next((k for k, e in enumerate(energy, 1) if e >= share - 1e-12), len(energy))


def _layer_norms(fingerprint: Fingerprint) -> list[LayerNorms]:
    sums: dict[int, list[float]] = {}
    for m in fingerprint.modules:
        if m.layer is not None:
            row = sums.setdefault(m.layer, [0.0, 0.0, 0.0])
            row[0] += m.delta_norm**2
            row[1] += m.a_norm**2
            row[2] += m.b_norm**2
    return [
        LayerNorms(layer=k, delta_norm=math.sqrt(d), a_norm=math.sqrt(a), b_norm=math.sqrt(b))
        for k, (d, a, b) in sorted(sums.items())
    ]


def _compared(spec: str, side: Side) -> ComparedAdapter:
    fingerprint = compute_fingerprint(side[1])
    layers = _layer_norms(fingerprint)
    energy = _energy(fingerprint)
    return ComparedAdapter(
        spec=spec,
        base_model=side[0],
        r=max((m.rank for m in side[1]), default=0),
        total_norm=fingerprint.total_norm,
        layers=layers,
        layer_cv=fingerprint.layer_cv,
        a_layer_cv=_cv([row.a_norm for row in layers]),
        top_layers=fingerprint.top_layers,
        energy=energy,
        rank_90=_rank_for(energy, 0.9),
        rank_99=_rank_for(energy, 0.99),
        warnings=fingerprint.warnings,
    )


def compare_many(sides: Sequence[tuple[str, Side]]) -> Comparison:
    """N loaded adapters side by side, with the exact cosine of every pair of updates.

    Raises:
        InvalidSpec: fewer than 2 or more than ``MAX_COMPARED`` adapters.
        InvalidAdapter: a shared module has different shapes in two of them.
    """
    specs = [spec for spec, _ in sides]
    check_count(specs)
    n = len(sides)
    cosine = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            cosine[i][j] = cosine[j][i] = similarity(sides[i][1][1], sides[j][1][1]).cosine
    return Comparison(
        specs=specs,
        adapters=[_compared(spec, side) for spec, side in sides],
        cosine=cosine,
        warnings=_base_warnings([side[0] for _, side in sides]),
    )
