"""Every fingerprint figure against ``dW = s * B @ A`` materialised in float64.

Adapters are saved by PEFT itself; the reference reads ``A``, ``B`` and the scaling back through
``PeftModel.from_pretrained``, never through ``registry.lora.inspection``, so a wrong key, rank or
scaling (rsLoRA, rank_pattern, alpha_pattern) shows up as a mismatch. Both sides are float64
over the same float32 values, so agreement is to ~1e-12; the tolerances below leave room only
for rounding.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from registry.errors import InvalidAdapter
from registry.lora.fingerprint import (
    compute_fingerprint,
    delta_norm,
    inner_product,
    similarity,
    spectrum,
)
from registry.lora.inspection import Inspection, LoraModule, inspect_dir
from tests.factories import make_adapter, tiny_gpt2, tiny_llama

RTOL = 1e-9
PEFT_RTOL = 1e-5  # PEFT's get_delta_weight multiplies in float32

CASES: dict[str, tuple[dict, Callable[[], torch.nn.Module]]] = {
    "q_v": ({}, tiny_llama),
    "all_linear": ({"target_modules": "all-linear"}, tiny_llama),
    "rslora": ({"use_rslora": True, "r": 16, "lora_alpha": 8}, tiny_llama),
    "dora": ({"use_dora": True}, tiny_llama),
    "patterns": (
        {
            "target_modules": ["q_proj", "v_proj", "o_proj"],
            "rank_pattern": {"v_proj": 4, "layers.1.self_attn.q_proj": 16},
            "alpha_pattern": {"o_proj": 64, "q_proj": 4},
        },
        tiny_llama,
    ),
    "rslora_patterns": (
        {"use_rslora": True, "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"q_proj": 3}},
        tiny_llama,
    ),
    "bf16": ({"dtype": torch.bfloat16}, tiny_llama),
    "layers_subset": ({"layers_to_transform": [1, 3]}, tiny_llama),
    "gpt2_conv1d": ({"target_modules": ["c_attn"], "fan_in_fan_out": True}, tiny_gpt2),
}


@dataclass
class Reference:
    """One module as PEFT loads it, with its update materialised in float64."""

    a: np.ndarray
    b: np.ndarray
    scaling: float
    delta: np.ndarray
    peft_delta: np.ndarray
    magnitude: np.ndarray | None

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.delta))


@dataclass
class Case:
    inspection: Inspection
    refs: dict[str, Reference]


def _layer(path: str) -> int:
    return next(int(part) for part in path.split(".") if part.isdigit())


def _peft_references(folder: Path, base: torch.nn.Module) -> dict[str, Reference]:
    model = PeftModel.from_pretrained(base, folder)
    refs = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, LoraLayer) or "default" not in layer.lora_A:
            continue
        a = layer.lora_A["default"].weight.detach().double().numpy()
        b = layer.lora_B["default"].weight.detach().double().numpy()
        scaling = float(layer.scaling["default"])
        magnitude = None
        if "default" in layer.lora_magnitude_vector:
            magnitude = layer.lora_magnitude_vector["default"].weight.detach().double().numpy()
        refs[name.removeprefix("base_model.model.")] = Reference(
            a=a,
            b=b,
            scaling=scaling,
            delta=scaling * (b @ a),
            peft_delta=layer.get_delta_weight("default").detach().double().numpy(),
            magnitude=magnitude,
        )
    return refs


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    kwargs, base = CASES[request.param]
    folder = make_adapter(tmp_path_factory.mktemp(request.param), model=base(), **kwargs)
    return Case(inspection=inspect_dir(folder), refs=_peft_references(folder, base()))


def test_modules_and_scaling_match_peft(case: Case) -> None:
    modules = {m.path: m for m in case.inspection.modules}
    assert sorted(modules) == sorted(case.refs)
    for path, ref in case.refs.items():
        m = modules[path]
        assert m.scaling == pytest.approx(ref.scaling, rel=1e-12), path
        assert m.rank == ref.a.shape[0]
        np.testing.assert_array_equal(m.a.astype(np.float64), ref.a)
        np.testing.assert_array_equal(m.b.astype(np.float64), ref.b)


def test_delta_norm_matches_peft_get_delta_weight(case: Case) -> None:
    for fp in case.inspection.info.fingerprint.modules:
        expected = float(np.linalg.norm(case.refs[fp.path].peft_delta))
        assert fp.delta_norm == pytest.approx(expected, rel=PEFT_RTOL), fp.path


def test_module_figures_match_materialised_update(case: Case) -> None:
    for fp in case.inspection.info.fingerprint.modules:
        ref = case.refs[fp.path]
        sv = np.linalg.svd(ref.delta, compute_uv=False)
        assert fp.layer == _layer(fp.path)
        assert fp.module == fp.path.rsplit(".", 1)[-1]
        assert fp.delta_norm == pytest.approx(ref.norm, rel=RTOL)
        assert fp.a_norm == pytest.approx(float(np.linalg.norm(ref.a)), rel=RTOL)
        assert fp.b_norm == pytest.approx(float(np.linalg.norm(ref.b)), rel=RTOL)
        assert len(fp.singular_values) == fp.rank
        np.testing.assert_allclose(fp.singular_values, sv[: fp.rank], rtol=1e-8, atol=1e-12 * sv[0])
        p = sv[sv > 0] / sv.sum()
        assert fp.effective_rank == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=RTOL)
        energy = np.cumsum(sv[: fp.rank] ** 2) / ref.norm**2
        np.testing.assert_allclose(fp.energy, energy, rtol=RTOL)
        if ref.magnitude is None:
            assert fp.dora_magnitude_norm is None
        else:
            expected = float(np.linalg.norm(ref.magnitude))
            assert fp.dora_magnitude_norm == pytest.approx(expected, rel=RTOL)


def test_aggregates_match_materialised_update(case: Case) -> None:
    fp = case.inspection.info.fingerprint
    layer_sq: dict[int, float] = defaultdict(float)
    type_sq: dict[str, float] = defaultdict(float)
    for path, ref in case.refs.items():
        layer_sq[_layer(path)] += ref.norm**2
        type_sq[path.rsplit(".", 1)[-1]] += ref.norm**2
    total_sq = sum(type_sq.values())
    layers = {k: math.sqrt(v) for k, v in layer_sq.items()}
    values = np.array([layers[k] for k in sorted(layers)])

    assert sorted(fp.layers) == sorted(layers)
    for k, v in layers.items():
        assert fp.layers[k] == pytest.approx(v, rel=RTOL)
    assert sorted(fp.module_types) == sorted(type_sq)
    for k, v in type_sq.items():
        assert fp.module_types[k] == pytest.approx(math.sqrt(v), rel=RTOL)
        assert fp.projection_balance[k] == pytest.approx(v / total_sq, rel=RTOL)
    assert sum(fp.projection_balance.values()) == pytest.approx(1.0, rel=RTOL)
    assert fp.top_layers == sorted(layers, key=lambda k: (-layers[k], k))[:5]
    assert fp.layer_cv == pytest.approx(float(values.std() / values.mean()), rel=1e-8)
    assert fp.total_norm == pytest.approx(math.sqrt(total_sq), rel=RTOL)
    assert fp.warnings == []


def test_self_similarity_is_one(case: Case) -> None:
    sim = similarity(case.inspection.modules, case.inspection.modules)
    assert sim.cosine == pytest.approx(1.0, rel=1e-12)
    assert sim.only_in_x == sim.only_in_y == []
    for row in sim.modules:
        assert row.inner == pytest.approx(case.refs[row.path].norm ** 2, rel=RTOL)
        assert row.norm_x == row.norm_y == pytest.approx(case.refs[row.path].norm, rel=RTOL)


def _materialised(inspection: Inspection) -> dict[str, np.ndarray]:
    return {
        m.path: m.scaling * (m.b.astype(np.float64) @ m.a.astype(np.float64))
        for m in inspection.modules
    }


def test_similarity_matches_materialised_cosine(tmp_path: Path) -> None:
    x = inspect_dir(
        make_adapter(tmp_path / "x", seed=1, target_modules=["q_proj", "v_proj", "o_proj"])
    )
    y = inspect_dir(make_adapter(tmp_path / "y", seed=2, r=4, lora_alpha=32, use_rslora=True))
    dx, dy = _materialised(x), _materialised(y)
    shared = sorted(dx.keys() & dy.keys())
    inner = sum(float(np.sum(dx[p] * dy[p])) for p in shared)
    # The true cosine of the full concatenated updates: o_proj counts in x's norm only.
    flat_x = np.concatenate([dx[p].ravel() for p in sorted(dx)])
    flat_y = np.concatenate([dy[p].ravel() for p in sorted(dy)])
    expected = inner / (np.linalg.norm(flat_x) * np.linalg.norm(flat_y))

    sim = similarity(x.modules, y.modules)

    assert sim.cosine == pytest.approx(expected, rel=1e-8, abs=1e-12)
    assert sim.only_in_x == sorted(p for p in dx if p.endswith("o_proj"))
    assert sim.only_in_y == []
    assert [row.path for row in sim.modules] == shared
    for row in sim.modules:
        expected_inner = float(np.sum(dx[row.path] * dy[row.path]))
        nx, ny = np.linalg.norm(dx[row.path]), np.linalg.norm(dy[row.path])
        assert row.inner == pytest.approx(expected_inner, rel=1e-8, abs=1e-12 * nx * ny)
        assert row.norm_x == pytest.approx(nx, rel=RTOL)
        assert row.norm_y == pytest.approx(ny, rel=RTOL)
        assert row.cosine == pytest.approx(expected_inner / (nx * ny), rel=1e-8, abs=1e-12)
        assert (row.layer, row.module) == (_layer(row.path), row.path.rsplit(".", 1)[-1])


def test_similarity_of_opposite_and_zero_updates(tmp_path: Path) -> None:
    x = inspect_dir(make_adapter(tmp_path / "x")).modules
    negated = [dataclasses.replace(m, b=-m.b) for m in x]
    zero = [dataclasses.replace(m, b=np.zeros_like(m.b)) for m in x]

    assert similarity(x, negated).cosine == pytest.approx(-1.0, rel=1e-12)
    assert similarity(x, zero).cosine == 0.0
    assert all(row.cosine == 0.0 and row.norm_y == 0.0 for row in similarity(x, zero).modules)


def test_similarity_refuses_different_shapes(tmp_path: Path) -> None:
    x = inspect_dir(make_adapter(tmp_path / "x")).modules
    y = inspect_dir(make_adapter(tmp_path / "y", model=tiny_llama(hidden=32))).modules
    with pytest.raises(
        InvalidAdapter, match=r"64x64 and 32x32 \(d_out x d_in\) cannot be compared"
    ):
        similarity(x, y)


def test_untrained_adapter_warns_and_has_flat_raw_norms(tmp_path: Path) -> None:
    inspection = inspect_dir(
        make_adapter(tmp_path / "a", trained=False, target_modules="all-linear")
    )
    fp = inspection.info.fingerprint

    assert fp.warnings == [
        "every lora_B is zero: this is an untrained (initialised) adapter; it changes nothing"
    ]
    assert inspection.warnings == fp.warnings
    assert fp.total_norm == 0.0 and fp.layer_cv == 0.0
    assert all(m.delta_norm == 0.0 and m.b_norm == 0.0 for m in fp.modules)
    assert all(m.effective_rank == 0.0 and m.energy == [0.0] * m.rank for m in fp.modules)
    # kaiming_uniform(a=sqrt(5)) gives ||A||_F = sqrt(r/3) whatever the width (64 or 128 here).
    assert {m.a.shape[1] for m in inspection.modules} == {64, 128}
    for m in fp.modules:
        assert m.a_norm == pytest.approx(math.sqrt(8 / 3), rel=0.1), m.path
    per_layer: dict[int, float] = defaultdict(float)
    for m in fp.modules:
        per_layer[m.layer] += m.a_norm**2
    raw = np.sqrt(list(per_layer.values()))
    assert raw.std() / raw.mean() < 0.03


def test_barely_trained_adapter_warns(tmp_path: Path) -> None:
    modules = inspect_dir(make_adapter(tmp_path / "a")).modules
    barely = [dataclasses.replace(m, b=m.b * 1e-4) for m in modules]

    (warning,) = compute_fingerprint(barely).warnings

    assert warning.startswith("lora_B is tiny next to lora_A (||B||/||A|| = ")
    assert "read delta_norm" in warning
    assert compute_fingerprint(modules).warnings == []


def _bound(*matrices: np.ndarray) -> float:
    return math.prod(float(np.linalg.norm(m)) for m in matrices)


# Magnitudes whose squares stay normal floats: the reference's own np.linalg.norm squares too.
_entries = st.floats(-10, 10, allow_nan=False).filter(lambda v: v == 0.0 or abs(v) > 1e-100)
_scalings = st.floats(0.01, 10)


@st.composite
def _lora_pair(draw: st.DrawFn) -> tuple[LoraModule, LoraModule]:
    d_in, d_out = draw(st.integers(1, 9)), draw(st.integers(1, 9))

    def module(r: int) -> LoraModule:
        a = draw(arrays(np.float64, (r, d_in), elements=_entries))
        b = draw(arrays(np.float64, (d_out, r), elements=_entries))
        return LoraModule(path="m.0.q", layer=0, module="q", a=a, b=b, scaling=draw(_scalings))

    return module(draw(st.integers(1, 6))), module(draw(st.integers(1, 6)))


@settings(max_examples=300, deadline=None)
@given(_lora_pair())
def test_closed_forms_match_materialised(pair: tuple[LoraModule, LoraModule]) -> None:
    x, y = pair
    dx, dy = x.scaling * (x.b @ x.a), y.scaling * (y.b @ y.a)
    bound_x = x.scaling * _bound(x.a, x.b)
    bound_y = y.scaling * _bound(y.a, y.b)

    norm = float(np.linalg.norm(dx))
    assert abs(delta_norm(x.a, x.b, x.scaling) - norm) <= RTOL * norm + 1e-12 * bound_x
    inner = float(np.sum(dx * dy))
    assert abs(inner_product(x, y) - inner) <= RTOL * abs(inner) + 1e-12 * bound_x * bound_y
    sv = np.linalg.svd(dx, compute_uv=False)
    ours = spectrum(x.a, x.b, x.scaling)
    np.testing.assert_allclose(ours, sv[: len(ours)], rtol=RTOL, atol=1e-12 * bound_x)
    assert len(ours) == min(x.rank, *dx.shape)


def test_delta_norm_survives_cancellation() -> None:
    """B's columns nearly cancel through A: the Gram trace alone would lose every digit."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3))  # rank 3: v^T A = 0 for the v below
    v = np.linalg.svd(a)[0][:, -1]
    b = np.outer(rng.standard_normal(5), v) + 1e-9 * rng.standard_normal((5, 4))
    expected = float(np.linalg.norm(b @ a))
    assert expected < 1e-8 * _bound(a, b)

    assert delta_norm(a, b, 1.0) == pytest.approx(expected, rel=1e-5)
    assert float(np.sqrt(np.sum(spectrum(a, b, 1.0) ** 2))) == pytest.approx(expected, rel=1e-5)
