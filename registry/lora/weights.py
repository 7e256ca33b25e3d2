"""A safetensors reader that trusts nothing: bounds-checked header, float dtypes only, no pickle.

The ``safetensors`` package is fast and correct for honest files; adapters arrive from the
outside, so every offset, shape and dtype is checked here before a single tensor byte is read,
and errors name the file and the problem in one line.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from registry.errors import InvalidAdapter

MAX_HEADER_BYTES = 16 * 1024 * 1024
_FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_NUMPY = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's header entry; ``start``/``end`` are absolute byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class WeightsFile:
    """A safetensors file whose header passed every check."""

    path: Path
    size: int
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` (bf16/fp16 widened to float32, F64 kept), checked to be finite."""
        entry = self.tensors[name]
        with self.path.open("rb") as fh:
            fh.seek(entry.start)
            raw = fh.read(entry.end - entry.start)
        if len(raw) != entry.end - entry.start:
            raise InvalidAdapter(f"{self.path.name}: file changed while reading {name}")
        array: np.ndarray
        if entry.dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(_NUMPY[entry.dtype]).newbyteorder("<"))
        target = np.float64 if entry.dtype == "F64" else np.float32
        array = array.astype(target, copy=False).reshape(entry.shape)
        if not np.isfinite(array).all():
            raise InvalidAdapter(f"{self.path.name}: tensor {name} contains NaN or Inf values")
        return array


def _fail(path: Path, message: str) -> InvalidAdapter:
    return InvalidAdapter(f"{path.name}: {message}")


def _entry(path: Path, name: object, raw: object, data_start: int, data_len: int) -> TensorEntry:
    if not isinstance(name, str) or not name or len(name) > 1024:
        raise _fail(path, "tensor names must be non-empty strings")
    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data_offsets"}:
        raise _fail(path, f"tensor {name}: entry must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if dtype not in _FLOAT_DTYPES:
        raise _fail(
            path,
            f"tensor {name} has dtype {dtype!r}; adapter weights must be F16, BF16, F32 or F64",
        )
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(type(d) is int and 0 <= d < 2**40 for d in shape)
    ):
        raise _fail(path, f"tensor {name} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise _fail(path, f"tensor {name} has data offsets {offsets!r} outside the file")
    expected = math.prod(shape) * _FLOAT_DTYPES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise _fail(
            path,
            f"tensor {name} spans {offsets[1] - offsets[0]} bytes but shape {shape} of {dtype} "
            f"needs {expected}",
        )
    return TensorEntry(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def open_weights(path: Path, *, max_bytes: int) -> WeightsFile:
    """Parse and check ``path``'s safetensors header; tensors are read later, on demand."""
    size = path.stat().st_size
    if size > max_bytes:
        raise _fail(path, f"{size} bytes is over the {max_bytes}-byte limit for adapter weights")
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise _fail(path, "truncated: a safetensors file starts with an 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise _fail(
                path,
                f"header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit; "
                "this is not a safetensors file (a renamed pickle?)",
            )
        if 8 + header_len > size:
            raise _fail(path, f"truncated: header length {header_len} runs past the end of file")
        header_bytes = fh.read(header_len)
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _fail(path, "header is not valid UTF-8 JSON; not a safetensors file") from None
    if not isinstance(header, dict):
        raise _fail(path, "header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _fail(path, "__metadata__ must map strings to strings")
    data_start = 8 + header_len
    data_len = size - data_start
    entries = [_entry(path, n, raw, data_start, data_len) for n, raw in header.items()]
    if not entries:
        raise _fail(path, "contains no tensors")
    _check_layout(path, entries, data_start, size)
    return WeightsFile(path, size, {e.name: e for e in entries}, metadata)


def _check_layout(path: Path, entries: list[TensorEntry], data_start: int, size: int) -> None:
    """Tensors must tile the data section exactly: no overlaps, gaps or trailing bytes."""
    cursor = data_start
    for entry in sorted(entries, key=lambda e: (e.start, e.end)):
        if entry.start != cursor:
            problem = "overlaps another tensor" if entry.start < cursor else "leaves a gap"
            raise _fail(path, f"tensor {entry.name} {problem} in the data section")
        cursor = entry.end
    if cursor != size:
        raise _fail(path, f"{size - cursor} trailing bytes after the last tensor (truncated?)")
