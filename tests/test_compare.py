"""``stance compare``: N adapters side by side, judged against materialised updates (numpy)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from registry.embedded import EmbeddedRegistry
from registry.errors import InvalidSpec
from registry.lora.compare import MAX_COMPARED, compare_many, read_folder
from registry.lora.inspection import inspect_dir
from tests.factories import make_adapter

runner = CliRunner()


def _updates(folder: Path) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """path -> (layer, materialised dW, A) in float64: the oracle."""
    out = {}
    for m in inspect_dir(folder).modules:
        a, b = m.a.astype(np.float64), m.b.astype(np.float64)
        out[m.path] = (m.layer, m.scaling * b @ a, a)
    return out


def _oracle(folder: Path) -> dict:
    updates = _updates(folder)
    layers = sorted({layer for layer, _, _ in updates.values()})
    delta = [
        math.sqrt(sum(np.sum(d**2) for k, d, _ in updates.values() if k == layer))
        for layer in layers
    ]
    raw = [
        math.sqrt(sum(np.sum(a**2) for k, _, a in updates.values() if k == layer))
        for layer in layers
    ]
    total = sum(np.sum(d**2) for _, d, _ in updates.values())
    rank = max(a.shape[0] for _, _, a in updates.values())
    kept = []
    for k in range(1, rank + 1):  # the best rank-k approximation of each module (Eckart-Young)
        kept.append(
            sum(np.sum(np.linalg.svd(d, compute_uv=False)[:k] ** 2) for _, d, _ in updates.values())
            / total
        )
    return {"delta": delta, "raw": raw, "energy": kept, "cv": np.std(delta) / np.mean(delta),
            "raw_cv": np.std(raw) / np.mean(raw)}  # fmt: skip


def _cosine(x: Path, y: Path) -> float:
    ux, uy = _updates(x), _updates(y)
    inner = sum(np.sum(ux[p][1] * uy[p][1]) for p in ux.keys() & uy.keys())
    nx = math.sqrt(sum(np.sum(d**2) for _, d, _ in ux.values()))
    ny = math.sqrt(sum(np.sum(d**2) for _, d, _ in uy.values()))
    return inner / (nx * ny)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("trio")
    return [
        make_adapter(root / "a", seed=11),
        make_adapter(root / "b", seed=12, r=4, lora_alpha=8),
        make_adapter(root / "c", seed=13, target_modules=["q_proj", "v_proj", "o_proj"]),
    ]


def test_compare_many_matches_materialised_updates(trio: list[Path]) -> None:
    sides = [(str(p), read_folder(p, max_weights_bytes=1 << 30)) for p in trio]
    result = compare_many(sides)
    assert result.specs == [str(p) for p in trio] and result.warnings == []
    for i, x in enumerate(trio):
        for j, y in enumerate(trio):
            assert result.cosine[i][j] == pytest.approx(_cosine(x, y), abs=1e-12)
    assert result.cosine[0][0] == pytest.approx(1.0)
    for adapter, folder in zip(result.adapters, trio, strict=True):
        want = _oracle(folder)
        assert [row.delta_norm for row in adapter.layers] == pytest.approx(want["delta"], rel=1e-9)
        assert [row.a_norm for row in adapter.layers] == pytest.approx(want["raw"], rel=1e-9)
        assert adapter.energy == pytest.approx(want["energy"], rel=1e-9)
        assert adapter.layer_cv == pytest.approx(want["cv"], rel=1e-9)
        assert adapter.a_layer_cv == pytest.approx(want["raw_cv"], rel=1e-9)
        assert adapter.rank_90 == next(k for k, e in enumerate(want["energy"], 1) if e >= 0.9)
        assert adapter.rank_99 == next(k for k, e in enumerate(want["energy"], 1) if e >= 0.99)
        assert adapter.r == len(want["energy"])


def test_an_untrained_adapter_has_no_direction_and_no_rank(
    trio: list[Path], adapters: dict[str, Path]
) -> None:
    sides = [
        (str(p), read_folder(p, max_weights_bytes=1 << 30))
        for p in (trio[0], adapters["untrained"])
    ]
    result = compare_many(sides)
    untrained = result.adapters[1]
    assert result.cosine[1] == [0.0, 0.0]  # a zero update points nowhere
    assert (untrained.total_norm, untrained.rank_90, untrained.rank_99) == (0.0, 0, 0)
    assert untrained.a_layer_cv < 0.05  # raw ||A|| is PEFT's init: flat across layers
    assert untrained.warnings and "untrained" in untrained.warnings[0]


@pytest.mark.parametrize("count", [0, 1, MAX_COMPARED + 1])
def test_too_few_or_too_many_are_refused_before_reading(
    registry: EmbeddedRegistry, count: int
) -> None:
    with pytest.raises(InvalidSpec, match=f"compare takes 2 to {MAX_COMPARED} adapters"):
        registry.compare([f"missing-{i}@1.0.0" for i in range(count)])  # never resolved


def test_embedded_compare_of_specs_and_folders(
    registry: EmbeddedRegistry, trio: list[Path]
) -> None:
    registry.publish(trio[0], "team-a/alpha@1.0.0", alias="prod")
    registry.publish(trio[1], "beta@0.1.0")
    result = registry.compare(["team-a/alpha@prod", "beta", str(trio[2])])
    assert result.specs == ["team-a/alpha@prod", "beta", str(trio[2])]
    assert result.cosine[0][1] == pytest.approx(_cosine(trio[0], trio[1]), abs=1e-12)
    assert result.cosine[2][0] == pytest.approx(_cosine(trio[2], trio[0]), abs=1e-12)
    assert [a.r for a in result.adapters] == [8, 4, 8]


def test_cli_compare_json_and_errors(registry: EmbeddedRegistry, trio: list[Path]) -> None:
    registry.publish(trio[0], "alpha@1.0.0")
    registry.publish(trio[1], "beta@1.0.0")
    out = runner.invoke(app, ["compare", "alpha", "beta@1.0.0", "--json"])
    assert out.exit_code == 0, out.stderr
    body = json.loads(out.stdout)  # exactly one JSON document
    assert set(body) == {"specs", "adapters", "cosine", "warnings"}
    assert set(body["adapters"][0]) >= {"spec", "layers", "layer_cv", "a_layer_cv", "rank_90"}
    assert set(body["adapters"][0]["layers"][0]) == {"layer", "delta_norm", "a_norm", "b_norm"}
    human = runner.invoke(app, ["compare", "alpha", "beta"])
    assert human.exit_code == 0 and "cosine of the whole updates" in human.stdout
    assert f"{body['cosine'][0][1]:+.3f}" in human.stdout
    for args, code in ((["alpha"], "bad_spec"), (["alpha", "nope"], "not_found")):
        failed = runner.invoke(app, ["compare", *args, "--json"])
        assert failed.exit_code == 1 and json.loads(failed.stdout)["code"] == code
        assert failed.stderr.startswith("error: ") and len(failed.stderr.splitlines()) == 1
