"""Broken and hostile adapter folders, each made from a real one, with the error it must raise."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PWNED = Path(os.environ.get("TMPDIR", "/tmp")) / "stance-unpickled-marker"


class Exploit:
    """Unpickling this creates PWNED; tests assert the file never appears."""

    def __reduce__(self) -> tuple:
        return (Path.touch, (PWNED,))


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / WEIGHTS)


def _config(folder: Path, **changes: object) -> None:
    path = folder / CONFIG
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _raw(folder: Path, header: dict, data: bytes, header_len: int | None = None) -> None:
    encoded = json.dumps(header).encode()
    size = len(encoded) if header_len is None else header_len
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", size) + encoded + data)


def _first(folder: Path) -> tuple[str, torch.Tensor]:
    return next(iter(_tensors(folder).items()))


def missing_config(f: Path) -> None:
    (f / CONFIG).unlink()


def non_json_config(f: Path) -> None:
    (f / CONFIG).write_text("{'r': 8,")


def unknown_peft_type(f: Path) -> None:
    _config(f, peft_type="IA3")


def bad_rank(f: Path) -> None:
    _config(f, r=-1)


def empty_weights(f: Path) -> None:
    (f / WEIGHTS).write_bytes(b"")


def truncated_weights(f: Path) -> None:
    data = (f / WEIGHTS).read_bytes()
    (f / WEIGHTS).write_bytes(data[: len(data) - 100])


def header_overflow(f: Path) -> None:
    _raw(f, {}, b"", header_len=2**63 + 5)


def header_past_end(f: Path) -> None:
    _raw(f, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"", header_len=4096)


def offsets_out_of_bounds(f: Path) -> None:
    header = {"x.lora_A.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1 << 40]}}
    _raw(f, header, b"\0" * 16)


def overlapping_offsets(f: Path) -> None:
    header = {
        "m.lora_A.weight": {"dtype": "F32", "shape": [8, 2], "data_offsets": [0, 64]},
        "m.lora_B.weight": {"dtype": "F32", "shape": [2, 8], "data_offsets": [32, 96]},
    }
    _raw(f, header, b"\0" * 96)


def integer_dtype(f: Path) -> None:
    tensors = _tensors(f)
    key = next(iter(tensors))
    tensors[key] = tensors[key].to(torch.int32)
    save_file(tensors, f / WEIGHTS)


def lora_a_without_b(f: Path) -> None:
    tensors = _tensors(f)
    del tensors[next(k for k in tensors if "lora_B" in k)]
    save_file(tensors, f / WEIGHTS)


def rank_disagrees(f: Path) -> None:
    _config(f, r=4)


def wrong_shape(f: Path) -> None:
    tensors = _tensors(f)
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = tensors[key].flatten()
    save_file(tensors, f / WEIGHTS)


def nan_weights(f: Path) -> None:
    tensors = _tensors(f)
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key][0, 0] = float("nan")
    save_file(tensors, f / WEIGHTS)


def pickle_only(f: Path) -> None:
    (f / WEIGHTS).unlink()
    (f / "adapter_model.bin").write_bytes(pickle.dumps(Exploit()))


def pickle_renamed(f: Path) -> None:
    (f / WEIGHTS).write_bytes(pickle.dumps(Exploit()))


def torch_zip_renamed(f: Path) -> None:
    torch.save({"x": torch.zeros(2)}, f / WEIGHTS)


def non_utf8_header(f: Path) -> None:
    (f / WEIGHTS).write_bytes(struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc")


def unexpected_tensor(f: Path) -> None:
    tensors = _tensors(f)
    tensors["base_model.model.model.layers.0.mlp.payload.weight"] = torch.zeros(4, 4)
    save_file(tensors, f / WEIGHTS)


def _raw_header(folder: Path, text: str) -> None:
    """Replace the header with ``text`` (raw JSON: duplicate keys, literals), data kept."""
    data = (folder / WEIGHTS).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    raw = text.encode("utf-8", "surrogatepass")
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])


def _header_text(folder: Path) -> str:
    data = (folder / WEIGHTS).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + length].decode().rstrip()


def duplicate_header_key(f: Path) -> None:
    header = json.loads(_header_text(f))
    name = next(k for k in header if k != "__metadata__")
    # The first, shadowed entry is garbage: Python's json keeps the last, safetensors refuses.
    _raw_header(f, '{"' + name + '":{"dtype":[1]},' + _header_text(f)[1:])


def falsy_metadata(f: Path) -> None:
    header = json.loads(_header_text(f))
    header.pop("__metadata__", None)
    _raw_header(f, '{"__metadata__":0,' + json.dumps(header)[1:])


def nan_bias(f: Path) -> None:
    tensors = _tensors(f)
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    bias = torch.zeros(tensors[key].shape[0])
    bias[0] = float("nan")
    tensors[key.removesuffix("weight") + "bias"] = bias
    save_file(tensors, f / WEIGHTS)


def invalid_pattern_key(f: Path) -> None:
    _config(f, rank_pattern={"(": 4})


def huge_alpha(f: Path) -> None:
    path = f / CONFIG
    path.write_text(path.read_text().rstrip()[:-1] + ', "lora_alpha": 1' + "0" * 400 + "}")


def card_leaks_environment(f: Path) -> None:
    (f / "README.md").unlink(missing_ok=True)
    (f / "README.md").symlink_to("/proc/self/environ")


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing_config": (missing_config, "missing adapter_config.json"),
    "non_json_config": (non_json_config, "adapter_config.json is not valid JSON"),
    "unknown_peft_type": (unknown_peft_type, "unsupported peft_type 'IA3'"),
    "bad_rank": (bad_rank, "r must be a positive integer"),
    "empty_weights": (empty_weights, "truncated"),
    "truncated_weights": (truncated_weights, "outside the file"),
    "header_overflow": (header_overflow, "exceeds the 16777216-byte limit"),
    "header_past_end": (header_past_end, "runs past the end of file"),
    "offsets_out_of_bounds": (offsets_out_of_bounds, "outside the file"),
    "overlapping_offsets": (overlapping_offsets, "overlaps another tensor"),
    "integer_dtype": (integer_dtype, "dtype 'I32'"),
    "lora_a_without_b": (lora_a_without_b, "but no lora_B"),
    "rank_disagrees": (rank_disagrees, "config says r=4"),
    "wrong_shape": (wrong_shape, "must be matrices"),
    "nan_weights": (nan_weights, "NaN or Inf"),
    "pickle_only": (pickle_only, "pickle weights are never loaded; convert to safetensors"),
    "pickle_renamed": (pickle_renamed, "not a safetensors file"),
    "torch_zip_renamed": (torch_zip_renamed, "not a safetensors file"),
    "non_utf8_header": (non_utf8_header, "not valid UTF-8 JSON"),
    "unexpected_tensor": (unexpected_tensor, "unexpected tensor"),
    # Issue 14: accepted against safetensors' judgement, crashes, leaks.
    "duplicate_header_key": (duplicate_header_key, "twice"),
    "falsy_metadata": (falsy_metadata, "__metadata__ must map strings to strings"),
    "nan_bias": (nan_bias, "NaN or Inf"),
    "invalid_pattern_key": (invalid_pattern_key, "rank_pattern key '(' is not a valid pattern"),
    "huge_alpha": (huge_alpha, "more than 20 digits"),
    "card_leaks_environment": (card_leaks_environment, "not an adapter file"),
}


def broken_copy(source: Path, dest: Path, case: str) -> tuple[Path, str]:
    """Copy ``source`` to ``dest`` and break it as ``case`` says; returns (folder, message)."""
    shutil.copytree(source, dest)
    breaker, message = CASES[case]
    breaker(dest)
    return dest, message
