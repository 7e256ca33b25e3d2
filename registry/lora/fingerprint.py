"""The fingerprint of a LoRA adapter: what its effective update ``dW = s * B @ A`` changes.

``dW`` is never materialised. Per module, with A (r, d_in) and B (d_out, r):

* ``||dW||_F^2 = s^2 trace((B^T B)(A A^T))``, O(r^2 (d_in + d_out));
* the spectrum from thin QRs ``A^T = Qa Ra`` and ``B = Qb Rb``: ``dW = Qb (s Rb Ra^T) Qa^T``,
  so the singular values of ``dW`` are those of the r x r core;
* ``<dW1, dW2>_F = s1 s2 trace((B2^T B1)(A1 A2^T))`` for similarity.

Raw ``||A||_F`` and ``||B||_F`` are reported too, with a warning when they say nothing: at
PEFT's initialisation ``||A||_F = sqrt(r/3)`` for any layer width and ``B = 0``, so while
``B`` stays tiny a norm of the raw parameters is ``A``'s initialisation, flat across layers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from registry.errors import InvalidAdapter

if TYPE_CHECKING:
    from registry.lora.format import LoraModule

TOP_K = 5
EFFECTIVE_RANK = "exp of the Shannon entropy of normalised singular values (Roy & Vetterli 2007)"
# Below this ratio of ||B||_F to ||A||_F (over all modules) B has barely left its zero init and
# raw parameter norms are A's init. The ratio ||dW|| / (s ||A|| ||B||) cannot tell: it does not
# change when B shrinks, so it stays near 1/sqrt(r) for an adapter that learned almost nothing.
TINY_B_RATIO = 1e-2
# Below this share of ||B||^2 ||A||^2, trace((B^T B)(A A^T)) loses digits to cancellation (its
# error is ~eps ||A||^2 ||B||^2); the QR core's error is ~eps ||A|| ||B||, like materialising.
_CANCELLATION = 1e-4


class ModuleFingerprint(BaseModel):
    layer: int | None
    module: str
    path: str
    rank: int
    delta_norm: float
    a_norm: float
    b_norm: float
    singular_values: list[float]
    effective_rank: float
    energy: list[float]
    dora_magnitude_norm: float | None = None


class Fingerprint(BaseModel):
    modules: list[ModuleFingerprint]
    layers: dict[int, float]
    module_types: dict[str, float]
    projection_balance: dict[str, float]
    top_layers: list[int]
    layer_cv: float
    total_norm: float
    effective_rank_definition: str = EFFECTIVE_RANK
    warnings: list[str] = []


def _as64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _core(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Rb Ra^T``: ``B @ A = Qb (Rb Ra^T) Qa^T`` with orthonormal Q, so it carries every figure."""
    # mode="r": only R; the (d, r) Q factors are never built (a 8M-wide A would double).
    ra: np.ndarray = np.asarray(np.linalg.qr(_as64(a).T, mode="r"))
    rb: np.ndarray = np.asarray(np.linalg.qr(_as64(b), mode="r"))
    return rb @ ra.T


def delta_norm(a: np.ndarray, b: np.ndarray, scaling: float) -> float:
    """``||s * B @ A||_F`` through the r x r Gram matrices, O(r^2 (d_in + d_out))."""
    a, b = _as64(a), _as64(b)
    gram_a, gram_b = a @ a.T, b.T @ b
    value = float(np.einsum("ij,ji->", gram_b, gram_a))
    if value < _CANCELLATION * float(np.trace(gram_a)) * float(np.trace(gram_b)):
        value = float(np.linalg.norm(_core(a, b))) ** 2
    return abs(scaling) * math.sqrt(max(value, 0.0))


def spectrum(a: np.ndarray, b: np.ndarray, scaling: float) -> np.ndarray:
    """Singular values of ``s * B @ A`` (descending) from two thin QRs and an r x r SVD."""
    return abs(scaling) * np.linalg.svd(_core(a, b), compute_uv=False)


def effective_rank(singular_values: np.ndarray) -> float:
    """Entropy effective rank; 0 for a zero update."""
    total = float(singular_values.sum())
    if total <= 0.0:
        return 0.0
    p = singular_values[singular_values > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def energy(singular_values: np.ndarray) -> list[float]:
    """Fraction of ``||dW||_F^2`` captured by the best rank-k approximation, k = 1..r."""
    squares = singular_values**2
    total = float(squares.sum())
    if total <= 0.0:
        return [0.0] * len(squares)
    return [float(x) for x in np.cumsum(squares) / total]


def module_fingerprint(m: LoraModule) -> ModuleFingerprint:
    """The figures of one module; float64 copies of ``a`` and ``b`` are made once, then freed."""
    a, b = _as64(m.a), _as64(m.b)
    sv = spectrum(a, b, m.scaling)
    magnitude = None if m.magnitude is None else float(np.linalg.norm(_as64(m.magnitude)))
    return ModuleFingerprint(
        layer=m.layer,
        module=m.module,
        path=m.path,
        rank=m.rank,
        delta_norm=delta_norm(a, b, m.scaling),
        a_norm=float(np.linalg.norm(a)),
        b_norm=float(np.linalg.norm(b)),
        singular_values=[float(x) for x in sv],
        effective_rank=effective_rank(sv),
        energy=energy(sv),
        dora_magnitude_norm=magnitude,
    )


def _root_sum_square(pairs: Iterable[tuple[object, float]]) -> dict:
    sums: dict = defaultdict(float)
    for key, value in pairs:
        sums[key] += value * value
    return {key: math.sqrt(total) for key, total in sorted(sums.items())}


def _warnings(modules: Sequence[ModuleFingerprint]) -> list[str]:
    if modules and all(m.b_norm == 0.0 for m in modules):
        return [
            "every lora_B is zero: this is an untrained (initialised) adapter; it changes nothing"
        ]
    a_total = math.sqrt(sum(m.a_norm**2 for m in modules))
    ratio = math.sqrt(sum(m.b_norm**2 for m in modules)) / a_total if a_total else 0.0
    if 0.0 < ratio < TINY_B_RATIO:
        return [
            f"lora_B is tiny next to lora_A (||B||/||A|| = {ratio:.2e}): B has barely left its "
            "zero init, so raw ||A||/||B|| figures reflect initialisation (||A|| = sqrt(r/3) "
            "at any width), not what was learned; read delta_norm"
        ]
    return []


def _check_finite(modules: Sequence[ModuleFingerprint]) -> None:
    """Bounded inputs keep every figure finite; a NaN here would be published as a fingerprint."""
    for m in modules:
        figures = [m.delta_norm, m.a_norm, m.b_norm, m.effective_rank, *m.singular_values]
        if m.dora_magnitude_norm is not None:
            figures.append(m.dora_magnitude_norm)
        if not all(math.isfinite(x) for x in figures + m.energy):
            raise InvalidAdapter(
                f"module {m.path}: its update overflows float64 (weights too large)"
            )


def summarise(modules: Sequence[ModuleFingerprint]) -> Fingerprint:
    """The fingerprint of an adapter from the figures of its modules."""
    _check_finite(modules)
    layers = _root_sum_square((m.layer, m.delta_norm) for m in modules if m.layer is not None)
    types = _root_sum_square((m.module, m.delta_norm) for m in modules)
    total_sq = sum(m.delta_norm**2 for m in modules)
    values = np.array(list(layers.values()))
    mean = float(values.mean()) if len(values) else 0.0
    return Fingerprint(
        modules=list(modules),
        layers=layers,
        module_types=types,
        projection_balance={k: (v * v / total_sq if total_sq else 0.0) for k, v in types.items()},
        top_layers=sorted(layers, key=lambda k: -layers[k])[:TOP_K],
        layer_cv=float(values.std() / mean) if mean > 0 else 0.0,  # population std (ddof=0)
        total_norm=math.sqrt(total_sq),
        warnings=_warnings(modules),
    )


def compute_fingerprint(lora_modules: Sequence[LoraModule]) -> Fingerprint:
    """The fingerprint of an adapter from its modules; exact, in float64."""
    return summarise([module_fingerprint(m) for m in lora_modules])


def inner_product(x: LoraModule, y: LoraModule) -> float:
    """``<dW_x, dW_y>_F`` without materialising either update."""
    gram_b = _as64(y.b).T @ _as64(x.b)  # (r_y, r_x)
    gram_a = _as64(x.a) @ _as64(y.a).T  # (r_x, r_y)
    return x.scaling * y.scaling * float(np.einsum("ij,ji->", gram_b, gram_a))


class ModuleSimilarity(BaseModel):
    path: str
    layer: int | None
    module: str
    cosine: float
    inner: float
    norm_x: float
    norm_y: float


class Similarity(BaseModel):
    cosine: float
    modules: list[ModuleSimilarity]
    only_in_x: list[str]
    only_in_y: list[str]


def _cosine(inner: float, norm_x: float, norm_y: float) -> float:
    # A zero update has no direction; 0 says "shares nothing". Clipping absorbs rounding at +-1.
    if norm_x == 0.0 or norm_y == 0.0:
        return 0.0
    return min(1.0, max(-1.0, inner / (norm_x * norm_y)))


def _by_path(modules: Sequence[LoraModule], side: str) -> dict[str, LoraModule]:
    found: dict[str, LoraModule] = {}
    for m in modules:
        if m.path in found:
            raise InvalidAdapter(f"adapter {side} lists module {m.path} twice")
        found[m.path] = m
    return found


def _check_shapes(x: LoraModule, y: LoraModule) -> None:
    shape_x, shape_y = (x.b.shape[0], x.a.shape[1]), (y.b.shape[0], y.a.shape[1])
    if shape_x != shape_y:
        raise InvalidAdapter(
            f"module {x.path}: updates of shape {shape_x[0]}x{shape_x[1]} and "
            f"{shape_y[0]}x{shape_y[1]} (d_out x d_in) cannot be compared; "
            "are both adapters for the same base model?"
        )


def similarity(x: Sequence[LoraModule], y: Sequence[LoraModule]) -> Similarity:
    """Cosine of two adapters' whole updates (every module of each), exact and cheap.

    Modules in only one adapter add to its norm but not to the inner product, so an adapter
    that also adapts other modules is less similar, as the concatenated updates are.

    Raises:
        InvalidAdapter: a shared module has different shapes, or a path appears twice.
    """
    xs, ys = _by_path(x, "x"), _by_path(y, "y")
    norms_x = {p: delta_norm(m.a, m.b, m.scaling) for p, m in xs.items()}
    norms_y = {p: delta_norm(m.a, m.b, m.scaling) for p, m in ys.items()}
    rows = []
    for path in sorted(xs.keys() & ys.keys()):
        mx, my = xs[path], ys[path]
        _check_shapes(mx, my)
        inner = inner_product(mx, my)
        nx, ny = norms_x[path], norms_y[path]
        rows.append(
            ModuleSimilarity(
                path=path,
                layer=mx.layer,
                module=mx.module,
                cosine=_cosine(inner, nx, ny),
                inner=inner,
                norm_x=nx,
                norm_y=ny,
            )
        )
    total_x = math.sqrt(sum(n * n for n in norms_x.values()))
    total_y = math.sqrt(sum(n * n for n in norms_y.values()))
    return Similarity(
        cosine=_cosine(sum(r.inner for r in rows), total_x, total_y),
        modules=rows,
        only_in_x=sorted(xs.keys() - ys.keys()),
        only_in_y=sorted(ys.keys() - xs.keys()),
    )
