"""The regression corpus of issue 14: every hostile file that once crashed, hung, leaked or was
accepted against safetensors' judgement, rebuilt by hand and refused with InvalidAdapter.

Header cases say what ``safetensors`` decides on the same bytes, so the corpus also checks the
oracle: where it refuses, we must; where it accepts, our refusal is on purpose.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save
from safetensors.torch import load as st_load

from registry.errors import InvalidAdapter
from registry.lora.format import read_config
from registry.lora.inspection import check_dir, inspect_dir, read_modules

PREFIX = "base_model.model.model.layers.0.self_attn.q_proj"
A, B = f"{PREFIX}.lora_A.weight", f"{PREFIX}.lora_B.weight"
CONFIG = {
    "peft_type": "LORA",
    "r": 2,
    "lora_alpha": 4,
    "target_modules": ["q_proj"],
    "base_model_name_or_path": "org/base",
}
F32 = '{"dtype":"F32","shape":[%s],"data_offsets":[%d,%d]}'
VALID_A = F32 % ("2,4", 0, 32)
VALID_B = F32 % ("4,2", 32, 64)
DATA = np.arange(16, dtype="<f4").tobytes()


def write(folder: Path, header: str, data: bytes = DATA, config: str | None = None) -> Path:
    """An adapter folder whose weights header is exactly ``header`` (raw JSON text)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = header.encode("utf-8", "surrogatepass")
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    (folder / "adapter_config.json").write_text(config or json.dumps(CONFIG))
    return folder


def weights(tensors: dict[str, np.ndarray], folder: Path, **config: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(save(tensors))
    (folder / "adapter_config.json").write_text(json.dumps({**CONFIG, **config}))
    return folder


def pair(d_in: int = 4, d_out: int = 4, r: int = 2, prefix: str = PREFIX) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        f"{prefix}.lora_A.weight": rng.standard_normal((r, d_in)).astype(np.float32),
        f"{prefix}.lora_B.weight": rng.standard_normal((d_out, r)).astype(np.float32),
    }


def test_the_hand_made_base_is_valid(tmp_path: Path) -> None:
    folder = write(tmp_path / "ok", "{" + f'"{A}":{VALID_A},"{B}":{VALID_B}' + "}")
    assert inspect_dir(folder).info.r == 2
    assert st_load((folder / "adapter_model.safetensors").read_bytes()).keys() == {A, B}


# name: (header, message, does safetensors refuse these bytes too?)
HEADERS: dict[str, tuple[str, str, bool]] = {
    "duplicate_tensor_shadowing_garbage": (
        "{" + f'"{A}":{{"dtype":[1]}},"{A}":{VALID_A},"{B}":{VALID_B}' + "}",
        "twice",
        True,
    ),
    "duplicate_metadata": (
        '{"__metadata__":{},"__metadata__":{},' + f'"{A}":{VALID_A},"{B}":{VALID_B}' + "}",
        "twice",
        True,
    ),
    "duplicate_field": (
        "{" + f'"{A}":{{"dtype":"F32","dtype":"F32","shape":[2,4],"data_offsets":[0,32]}},'
        f'"{B}":{VALID_B}' + "}",
        "twice",
        True,
    ),
    "metadata_zero": (
        '{"__metadata__":0,' + f'"{A}":{VALID_A},"{B}":{VALID_B}' + "}",
        "__metadata__",
        True,
    ),
    "metadata_list": (
        '{"__metadata__":[],' + f'"{A}":{VALID_A},"{B}":{VALID_B}' + "}",
        "__metadata__",
        True,
    ),
    "metadata_empty_string": (
        '{"__metadata__":"",' + f'"{A}":{VALID_A},"{B}":{VALID_B}' + "}",
        "__metadata__",
        True,
    ),
    "metadata_number_value": (
        '{"__metadata__":{"a":1},' + f'"{A}":{VALID_A},"{B}":{VALID_B}' + "}",
        "__metadata__",
        True,
    ),
    "minus_zero_offset": (
        "{" + f'"{A}":{{"dtype":"F32","shape":[2,4],"data_offsets":[-0,32]}},"{B}":{VALID_B}' + "}",
        "-0",
        True,
    ),
    "minus_zero_dimension": (
        "{" + f'"{A}":{{"dtype":"F32","shape":[-0,4],"data_offsets":[0,0]}},"{B}":{VALID_B}' + "}",
        "-0",
        True,
    ),
    "lone_surrogate_name": (
        "{" + f'"{A}\\ud800":{VALID_A},"{B}":{VALID_B}' + "}",
        "lone surrogate",
        True,
    ),
    "dtype_as_list": (
        "{"
        + f'"{A}":{{"dtype":["F32"],"shape":[2,4],"data_offsets":[0,32]}},"{B}":{VALID_B}'
        + "}",
        "dtype",
        True,
    ),
    "deep_nesting": (
        '{"__metadata__":'
        + "[" * 100_000
        + "]" * 100_000
        + f',"{A}":{VALID_A},"{B}":{VALID_B}'
        + "}",
        "deeper than",
        True,
    ),
    "integer_of_4400_digits": (
        "{" + f'"{A}":{{"dtype":"F32","shape":[2,4],"data_offsets":[0,{"9" * 4400}]}},'
        f'"{B}":{VALID_B}' + "}",
        "digits",
        True,
    ),
    "nan_literal": (
        "{" + f'"{A}":{{"dtype":"F32","shape":[NaN],"data_offsets":[0,32]}},"{B}":{VALID_B}' + "}",
        "NaN",
        True,
    ),
    "float_out_of_range": (
        "{"
        + f'"{A}":{{"dtype":"F32","shape":[1e400],"data_offsets":[0,32]}},"{B}":{VALID_B}'
        + "}",
        "out of the range",
        True,
    ),
    "shape_overflowing_u64": (
        "{" + f'"{A}":{VALID_A},"{B}":{VALID_B},'
        f'"{PREFIX}.lora_B.bias":{{"dtype":"F32","shape":[{2**63},{2**63}],"data_offsets":[64,64]}}'
        + "}",
        "invalid shape",
        True,
    ),
    "zero_size_with_huge_dims": (
        "{" + f'"{A}":{VALID_A},"{B}":{VALID_B},'
        f'"{PREFIX}.lora_B.bias":{{"dtype":"F32","shape":[0,{2**39},{2**39}],"data_offsets":[64,64]}}'
        + "}",
        "never empty",
        False,
    ),
    "control_character_in_name": (
        "{" + f'"{A}\\u0007":{VALID_A},"{B}":{VALID_B}' + "}",
        "printable",
        False,
    ),
    "offsets_past_the_end": (
        "{" + f'"{A}":{VALID_A},"{B}":{F32 % ("4,2", 32, 96)}' + "}",
        "outside the file",
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_hostile_header_is_refused(case: str, tmp_path: Path) -> None:
    header, message, oracle_refuses = HEADERS[case]
    folder = write(tmp_path / case, header)
    with pytest.raises(InvalidAdapter, match=message) as info:
        inspect_dir(folder)
    assert "\n" not in str(info.value)
    if oracle_refuses:
        with pytest.raises(Exception):  # noqa: B017 - any refusal by safetensors
            st_load((folder / "adapter_model.safetensors").read_bytes())


def _bias(value: np.ndarray) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return weights({**pair(), f"{PREFIX}.lora_B.bias": value}, folder, lora_bias=True)

    return build


TENSORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "bias_nan": (_bias(np.array([0, np.nan, 0, 0], dtype=np.float32)), "NaN or Inf"),
    "bias_wrong_shape": (_bias(np.zeros(3, dtype=np.float32)), "bias does not match"),
    "bias_matrix": (_bias(np.zeros((4, 1), dtype=np.float32)), "bias does not match"),
    "f64_near_1e150": (
        lambda f: weights({k: v.astype("<f8") * 1e150 for k, v in pair().items()}, f),
        "beyond the float32 range",
    ),
    "two_lora_a_for_one_module": (
        lambda f: weights({**pair(), f"{PREFIX}.lora_embedding_A": pair()[A]}, f),
        "two lora_A",
    ),
    "prefix_and_bare_name_for_one_module": (
        lambda f: weights({**pair(), A.removeprefix("base_model.model."): pair()[A]}, f),
        "two lora_A",
    ),
    "empty_path_component": (
        lambda f: weights(pair(prefix="base_model.model.model..q_proj"), f),
        "dotted module path",
    ),
    "int_dtype": (
        lambda f: weights({A: np.zeros((2, 4), np.int32), B: pair()[B]}, f),
        "dtype 'I32'",
    ),
    "saved_module_with_nan": (
        lambda f: weights(
            {**pair(), "base_model.model.score.weight": np.full((2, 2), np.inf, np.float32)},
            f,
            modules_to_save=["score"],
        ),
        "NaN or Inf",
    ),
}


@pytest.mark.parametrize("case", sorted(TENSORS))
def test_hostile_tensors_are_refused(case: str, tmp_path: Path) -> None:
    build, message = TENSORS[case]
    with pytest.raises(InvalidAdapter, match=message):
        inspect_dir(build(tmp_path / case))


def test_a_checked_bias_is_accepted(tmp_path: Path) -> None:
    folder = _bias(np.ones(4, dtype=np.float32))(tmp_path / "bias")
    assert inspect_dir(folder).info.r == 2


def _config(**changes: object) -> str:
    return json.dumps({**CONFIG, **changes})


def _raw_config(**literals: str) -> str:
    """CONFIG plus raw JSON literals; a key of CONFIG given again appears twice."""
    text = json.dumps({k: v for k, v in CONFIG.items() if k != "base_model_name_or_path"})[:-1]
    return text + "".join(f', "{k}": {v}' for k, v in literals.items()) + "}"


# name: (config text, message)
CONFIGS: dict[str, tuple[str, str]] = {
    "alpha_10_to_the_400": (_raw_config(lora_alpha="1" + "0" * 400), "more than 20 digits"),
    "alpha_1e308": (_config(lora_alpha=1e308), "lora_alpha must be a positive number"),
    "alpha_pattern_1e308": (_config(alpha_pattern={"q_proj": 1e308}), "at most"),
    "alpha_pattern_infinity": (_raw_config(alpha_pattern='{"q_proj": Infinity}'), "Infinity"),
    "rank_pattern_infinity": (_raw_config(rank_pattern='{"q_proj": Infinity}'), "Infinity"),
    "rank_pattern_fraction": (_config(rank_pattern={"q_proj": 4.5}), "positive integers"),
    "rank_pattern_open_paren": (_config(rank_pattern={"(": 4}), "not a valid pattern"),
    "rank_pattern_backreference": (_config(rank_pattern={r"(q)\1": 4}), "RE2"),
    "rank_pattern_lookahead": (_config(rank_pattern={"(?=q)q_proj": 4}), "RE2"),
    "rank_pattern_count_read_apart": (_config(rank_pattern={"q{,3}_proj": 2}), "count"),
    "rank_pattern_nested_set": (_config(rank_pattern={"[[:alpha:]]+": 2}), "not a valid pattern"),
    "rank_pattern_non_ascii_key": (_config(rank_pattern={"q_pröj": 2}), "printable ASCII"),
    "rank_pattern_too_many_keys": (
        _config(rank_pattern={f"k{i}": 2 for i in range(1001)}),
        "at most 1000",
    ),
    "modules_to_save_of_ints": (_config(modules_to_save=[1]), "modules_to_save must be"),
    "modules_to_save_number": (_config(modules_to_save=5), "modules_to_save must be"),
    "revision_number": (_config(revision=5), "revision must be"),
    "revision_lone_surrogate": (_raw_config(revision='"v\\ud800"'), "lone surrogate"),
    "base_model_lone_surrogate": (
        _raw_config(base_model_name_or_path='"org/\\udc00"'),
        "lone surrogate",
    ),
    "base_model_control_character": (
        _config(base_model_name_or_path="org/\u0000base"),
        "base_model_name_or_path must be",
    ),
    "deeply_nested": (_raw_config(auto_mapping="[" * 50_000 + "]" * 50_000), "deeper than"),
    "integer_of_4400_digits": (_raw_config(unknown="9" * 4400), "more than 20 digits"),
    "duplicate_key": (_raw_config(r="2"), "twice"),
    "minus_zero": (_raw_config(lora_dropout="-0"), "-0"),
    "nan_dropout": (_raw_config(lora_dropout="NaN"), "NaN"),
    "use_rslora_string": (_config(use_rslora="yes"), "use_rslora must be true or false"),
    "use_dora_number": (_config(use_dora=1), "use_dora must be true or false"),
    "layers_to_transform_string": (_config(layers_to_transform="0"), "layers_to_transform"),
    "target_modules_number": (_config(target_modules=5), "target_modules must be"),
    "bias_unknown": (_config(bias="sometimes"), "bias must be"),
    "r_boolean": (_config(r=True), "r must be a positive integer"),
    "not_an_object": ("[]", "must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_hostile_config_is_refused(case: str, tmp_path: Path) -> None:
    text, message = CONFIGS[case]
    folder = weights(pair(), tmp_path / case)
    (folder / "adapter_config.json").write_text(text)
    with pytest.raises(InvalidAdapter, match=message) as info:
        read_config(folder / "adapter_config.json")
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidAdapter, match=message):
        inspect_dir(folder)


def test_module_path_that_is_not_ascii_under_unicode_aware_keys(tmp_path: Path) -> None:
    folder = weights(
        pair(prefix="base_model.model.model.layers.0.self_attn.q_pröj"), tmp_path / "u"
    )
    (folder / "adapter_config.json").write_text(_config(alpha_pattern={r"\w+": 8}))
    with pytest.raises(InvalidAdapter, match="not ASCII"):
        inspect_dir(folder)


# --------------------------------------------------------------------------- bounded time


@pytest.mark.parametrize(
    "key, component",
    [("(x+x+)+y", "x" * 27), (r"([\w.]+)+#", "x" * 40), ("(a|aa)*b", "a" * 40)],
)
def test_backtracking_keys_run_in_bounded_time(key: str, component: str, tmp_path: Path) -> None:
    folder = weights(pair(prefix=f"base_model.model.{component}"), tmp_path / "k")
    (folder / "adapter_config.json").write_text(
        _config(rank_pattern={key: 4}, alpha_pattern={key: 4})
    )
    start = time.perf_counter()
    info = inspect_dir(folder).info
    assert time.perf_counter() - start < 2.0  # Python's re: 6 s to hours
    assert info.r == 2


def test_a_hundred_modules_and_a_thousand_keys(tmp_path: Path) -> None:
    tensors: dict[str, np.ndarray] = {}
    for layer in range(100):
        tensors |= pair(prefix=f"base_model.model.model.layers.{layer}.self_attn.q_proj")
    folder = weights(tensors, tmp_path / "many")
    keys = {rf"layers\.{i}\.(self_attn|mlp)\.[a-z]+_(proj|fc)x?": 2 for i in range(1000, 2000)}
    (folder / "adapter_config.json").write_text(_config(rank_pattern=keys))
    start = time.perf_counter()
    assert len(inspect_dir(folder).info.fingerprint.modules) == 100
    assert time.perf_counter() - start < 15.0  # Python's re: past 120 s


def test_modules_to_save_is_matched_in_linear_time(tmp_path: Path) -> None:
    """4,000 saved names x 20,000 tensors: 80 million substring tests before, 108 s."""
    saved = [f"head{i}" for i in range(4000)]
    one = np.zeros(1, dtype=np.float32)
    tensors = {f"base_model.model.head3999.part{i}.weight": one for i in range(20_000)}
    folder = weights({**pair(), **tensors}, tmp_path / "saved", modules_to_save=saved)
    start = time.perf_counter()
    check_dir(folder)
    assert time.perf_counter() - start < 15.0


# --------------------------------------------------------------------------- files


def _link_card(target: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "README.md").symlink_to(target)


def _fifo_card(folder: Path) -> None:
    os.mkfifo(folder / "README.md")


def _dir_card(folder: Path) -> None:
    (folder / "README.md").mkdir()


def _big_card(folder: Path) -> None:
    with (folder / "README.md").open("wb") as fh:
        fh.truncate(2 * 1024 * 1024)  # sparse: 2 MiB of zeros, no disk used


def _link_config_to_proc(folder: Path) -> None:
    (folder / "adapter_config.json").unlink()
    (folder / "adapter_config.json").symlink_to("/proc/self/environ")


def _link_weights_to_dev(folder: Path) -> None:
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.safetensors").symlink_to("/dev/zero")


FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "card_to_proc_environ": (_link_card("/proc/self/environ"), "not an adapter file"),
    "card_to_proc_mem": (_link_card("/proc/self/mem"), "not an adapter file"),
    "card_to_dev_zero": (_link_card("/dev/zero"), "not an adapter file"),
    "card_is_a_fifo": (_fifo_card, "not a regular file"),
    "card_is_a_directory": (_dir_card, "not a regular file"),
    "card_over_the_cap": (_big_card, "larger than"),
    "card_dangling_link": (_link_card("/nonexistent/readme"), "missing README.md"),
    "config_to_proc_environ": (_link_config_to_proc, "not an adapter file"),
    "weights_to_dev_zero": (_link_weights_to_dev, "not an adapter file"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_files_that_are_not_regular_are_refused(case: str, tmp_path: Path) -> None:
    breaker, message = FILES[case]
    folder = weights(pair(), tmp_path / case)
    breaker(folder)
    for entry in (inspect_dir, check_dir):
        with pytest.raises(InvalidAdapter, match=message):
            entry(folder)


def test_a_hugging_face_cache_snapshot_of_symlinks_publishes(tmp_path: Path) -> None:
    """snapshots/<rev>/file -> ../../blobs/<hash>: links are followed to regular files."""
    source = weights(pair(), tmp_path / "source")
    (source / "README.md").write_text("# card\n")
    blobs = tmp_path / "repo" / "blobs"
    snapshot = tmp_path / "repo" / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, name in enumerate(["adapter_config.json", "adapter_model.safetensors", "README.md"]):
        (blobs / f"blob{i}").write_bytes((source / name).read_bytes())
        (snapshot / name).symlink_to(f"../../blobs/blob{i}")
    inspection = inspect_dir(snapshot)
    assert set(inspection.files) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
    }
    assert inspection.manifest.digest == inspect_dir(source).manifest.digest


# --------------------------------------------------------------------------- one exit


ALL = (inspect_dir, check_dir, read_modules)


@pytest.mark.parametrize(
    "where, exc, entries",
    [
        ("registry.lora.strict_json.loads", RecursionError("maximum recursion depth"), ALL),
        ("registry.lora.weights.os.preadv", OSError(5, "Input/output error"), ALL),
        ("registry.lora.patterns.PatternTable.value", TypeError("boom"), ALL),
        ("registry.lora.weights._decode", MemoryError(), ALL),
        ("registry.lora.fingerprint.np.linalg.qr", np.linalg.LinAlgError("no"), (inspect_dir,)),
        ("registry.lora.sketch._blocks", ZeroDivisionError("no"), (inspect_dir,)),
    ],
)
def test_no_other_exception_escapes(
    where: str,
    exc: Exception,
    entries: tuple[Callable[..., object], ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever breaks inside (a parser, numpy, RE2, the disk), callers see InvalidAdapter."""
    folder = weights(pair(), tmp_path / "a", rank_pattern={"q_proj": 2})

    def explode(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(where, explode)
    for entry in entries:
        with pytest.raises(InvalidAdapter) as info:
            entry(folder)
        assert "\n" not in str(info.value)
        assert isinstance(info.value.__cause__, type(exc))
