"""Adapter folder validation: hostile input is refused before any math; nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.errors import InvalidAdapter
from registry.lora.inspection import inspect_dir
from tests import hostile
from tests.factories import TINY_BASE, make_adapter, tiny_gpt2


def test_inspect_reports_basic_metadata(adapters: dict[str, Path]) -> None:
    info = inspect_dir(adapters["curious"]).info
    assert info.peft_type == "LORA"
    assert (info.r, info.lora_alpha, info.scaling) == (8, 16.0, 2.0)
    assert info.target_modules == ["q_proj", "v_proj"]
    assert info.layers == [0, 1, 2, 3]
    assert info.dtype == "float32"
    assert info.base_model == TINY_BASE
    # 4 layers x (q: A 8x64 + B 64x8, v: A 8x64 + B 32x8)
    assert info.parameters == 4 * (8 * 64 + 64 * 8 + 8 * 64 + 32 * 8)
    assert info.bytes == (adapters["curious"] / "adapter_model.safetensors").stat().st_size
    assert info.shapes["model.layers.0.self_attn.v_proj"] == [64, 32]
    assert not info.use_dora and not info.use_rslora


def test_inspect_handles_peft_variants(tmp_path: Path) -> None:
    import torch

    folder = make_adapter(
        tmp_path / "v",
        use_dora=True,
        use_rslora=True,
        rank_pattern={"v_proj": 4},
        alpha_pattern={"v_proj": 32},
        dtype=torch.bfloat16,
    )
    info = inspect_dir(folder).info
    assert info.use_dora and info.use_rslora and info.dtype == "bfloat16"
    ranks = {m.path.rsplit(".", 1)[-1]: m.rank for m in info.fingerprint.modules}
    assert ranks == {"q_proj": 8, "v_proj": 4}


def test_inspect_gpt2_conv1d(tmp_path: Path) -> None:
    folder = make_adapter(
        tmp_path / "g", model=tiny_gpt2(), target_modules=["c_attn"], fan_in_fan_out=True
    )
    info = inspect_dir(folder).info
    assert info.target_modules == ["c_attn"]
    assert info.shapes["transformer.h.0.attn.c_attn"] == [64, 192]


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_hostile_input_is_refused_with_a_clear_message(
    case: str, adapters: dict[str, Path], tmp_path: Path
) -> None:
    hostile.PWNED.unlink(missing_ok=True)
    folder, message = hostile.broken_copy(adapters["curious"], tmp_path / case, case)
    with pytest.raises(InvalidAdapter) as info:
        inspect_dir(folder)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not hostile.PWNED.exists(), "something unpickled the weights"


def test_pickle_exploit_is_real() -> None:
    """The payload that unpickling would run does create the marker, so its absence means a lot."""
    hostile.PWNED.unlink(missing_ok=True)
    call, args = hostile.Exploit().__reduce__()
    call(*args)
    assert hostile.PWNED.exists()
    hostile.PWNED.unlink()


def test_weights_over_size_limit_are_refused_before_reading(adapters: dict[str, Path]) -> None:
    with pytest.raises(InvalidAdapter, match="over the 100-byte limit"):
        inspect_dir(adapters["curious"], max_weights_bytes=100)


def test_config_alpha_must_be_a_number(adapters: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    for f in adapters["curious"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "adapter_config.json").read_text())
    config["lora_alpha"] = "16"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidAdapter, match="lora_alpha must be a positive number"):
        inspect_dir(folder)


def test_embedding_targets_with_saved_base_weights(tmp_path: Path) -> None:
    folder = make_adapter(tmp_path / "e", target_modules=["embed_tokens", "q_proj"])
    info = inspect_dir(folder).info
    assert info.target_modules == ["embed_tokens", "q_proj"]
    assert info.shapes["model.embed_tokens"] == [256, 64]  # num_embeddings -> embedding_dim


def test_float64_weights_keep_their_precision(tmp_path: Path) -> None:
    import torch

    folder = make_adapter(tmp_path / "f", dtype=torch.float64)
    inspection = inspect_dir(folder)
    assert inspection.info.dtype == "float64"
    assert inspection.modules[0].a.dtype.name == "float64"
