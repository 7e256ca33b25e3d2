"""Diff and "similar adapters" over published versions, exact against materialised updates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cli.main import app
from registry.embedded import EmbeddedRegistry
from registry.lora.inspection import inspect_dir
from registry.lora.sketch import Sketch, sketch
from tests.factories import make_adapter


def materialised_cosine(x: Path, y: Path) -> float:
    left = {m.path: m for m in inspect_dir(x).modules}
    right = {m.path: m for m in inspect_dir(y).modules}

    def dw(m):  # noqa: ANN001, ANN202
        return m.scaling * m.b.astype(np.float64) @ m.a.astype(np.float64)

    inner = sum(float(np.sum(dw(left[p]) * dw(right[p]))) for p in left.keys() & right.keys())
    nx = np.sqrt(sum(np.sum(dw(m) ** 2) for m in left.values()))
    ny = np.sqrt(sum(np.sum(dw(m) ** 2) for m in right.values()))
    return inner / (nx * ny)


def perturbed(source: Path, dest: Path, *, noise: float, sign: float = 1.0) -> Path:
    shutil.copytree(source, dest)
    tensors = load_file(source / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(7)
    for key, value in tensors.items():
        if "lora_B" in key:
            tensors[key] = sign * value + noise * torch.randn(value.shape, generator=generator)
    save_file(tensors, dest / "adapter_model.safetensors")
    return dest


def test_diff_is_exact_for_specs_and_folders(
    registry: EmbeddedRegistry, adapters: dict[str, Path], tmp_path: Path
) -> None:
    near = perturbed(adapters["curious"], tmp_path / "near", noise=0.05)
    registry.publish(adapters["curious"], "curious@1.0.0")
    registry.publish(near, "near@1.0.0")
    expected = materialised_cosine(adapters["curious"], near)
    assert 0.5 < expected < 0.999
    for x, y in [
        ("curious", "near"),
        ("curious@1.0.0", str(near)),
        (str(adapters["curious"]), str(near)),
    ]:
        result = registry.diff(x, y)
        assert result.cosine == pytest.approx(expected, rel=1e-9)
        assert len(result.modules) == 8 and not result.only_in_x and not result.warnings
    assert registry.diff("curious", "curious").cosine == pytest.approx(1.0)
    negated = perturbed(adapters["curious"], tmp_path / "neg", noise=0.0, sign=-1.0)
    assert registry.diff("curious", str(negated)).cosine == pytest.approx(-1.0)


def test_diff_warns_across_base_models(registry: EmbeddedRegistry, tmp_path: Path) -> None:
    a = make_adapter(tmp_path / "a", seed=1, base_model="org/base-a")
    b = make_adapter(tmp_path / "b", seed=2, base_model="org/base-b")
    result = registry.diff(str(a), str(b))
    assert result.warnings and "different base models" in result.warnings[0]


def test_similar_ranks_by_exact_cosine_on_the_same_base(
    registry: EmbeddedRegistry, adapters: dict[str, Path], tmp_path: Path
) -> None:
    registry.publish(adapters["curious"], "curious@1.0.0")
    registry.publish(perturbed(adapters["curious"], tmp_path / "n1", noise=0.02), "close@1.0.0")
    registry.publish(perturbed(adapters["curious"], tmp_path / "n2", noise=0.2), "farther@1.0.0")
    registry.publish(adapters["confident"], "unrelated@1.0.0")
    other_base = make_adapter(tmp_path / "ob", seed=1, base_model="org/other")
    registry.publish(other_base, "other-base@1.0.0")
    found = registry.similar("curious", limit=10)
    assert [s.name for s in found][:2] == ["close", "farther"]
    assert {s.name for s in found} == {"close", "farther", "unrelated"}
    for s in found:
        folder = registry.fetch(f"{s.name}@{s.version}", tmp_path / "pulled" / s.name)
        assert s.cosine == pytest.approx(materialised_cosine(adapters["curious"], folder), rel=1e-9)
    assert registry.similar("curious", limit=1)[0].name == "close"


def test_sketch_round_trip_and_estimate(adapters: dict[str, Path]) -> None:
    inspection = inspect_dir(adapters["curious"])
    sk = inspection.sketch
    decoded = Sketch.decode(sk.encode())
    assert decoded.rows.keys() == sk.rows.keys() and decoded.norm == sk.norm
    for path, row in sk.rows.items():
        assert np.allclose(decoded.rows[path], row, rtol=1e-6)
    # The estimate is unbiased: averaged over many projections it approaches the exact value.
    exact = inspection.info.fingerprint.total_norm**2
    assert decoded.inner(decoded) == pytest.approx(exact, rel=0.5)
    assert sketch(inspection.modules, norm=1.0).norm == 1.0


def test_cli_diff_and_similar(settings, adapters: dict[str, Path], tmp_path: Path) -> None:  # noqa: ANN001
    runner = CliRunner()
    for key in ("curious", "confident"):
        assert runner.invoke(app, ["publish", str(adapters[key]), f"{key}@1.0.0"]).exit_code == 0
    out = runner.invoke(app, ["diff", "curious", "confident", "--json"])
    assert out.exit_code == 0, out.stderr
    body = json.loads(out.stdout)
    assert {"cosine", "modules"} <= body.keys()
    assert body["cosine"] == pytest.approx(
        materialised_cosine(adapters["curious"], adapters["confident"]), rel=1e-9
    )
    # Random adapters are orthogonal (|cosine| ~ 0.001): --min-cosine 0 lists them anyway.
    similar = json.loads(
        runner.invoke(app, ["similar", "curious", "--min-cosine", "0", "--json"]).stdout
    )
    assert [s["name"] for s in similar] == ["confident"]
    missing = runner.invoke(app, ["diff", "curious", "nope", "--json"])
    assert missing.exit_code == 1 and json.loads(missing.stdout)["code"] == "not_found"
