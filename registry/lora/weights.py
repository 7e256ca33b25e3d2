"""A safetensors reader that trusts nothing: it accepts what ``safetensors`` accepts, minus
what an adapter registry refuses on purpose.

The ``safetensors`` package is fast and correct for honest files; adapters arrive from the
outside, so every offset, shape and dtype is checked here before a single tensor byte is read,
and errors name the file and the problem in one line. The header is read as serde_json reads it
(``strict_json``); on purpose we also refuse non-float dtypes, zero-size tensors, control
characters in names, keys beyond dtype/shape/data_offsets, and values that are NaN, infinite or
beyond float32's range (a loader casts to the model's dtype). Tensors are read one at a time
from one open descriptor (``read``, ``check``); ``digest`` then hashes the file and refuses it
unless its header and every tensor hash to the bytes that were checked.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from registry.errors import InvalidAdapter
from registry.lora import strict_json
from registry.lora.files import open_fd

MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_TENSORS = 1 << 17
# A tensor's entry is at most 14 JSON values (an object, dtype, a shape of up to 8, offsets).
_MAX_VALUES = 16 * MAX_TENSORS
MAX_NAME_CHARS = 1024
MAX_DIM = 1 << 40
_FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_NUMPY = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}
DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_F32_MAX = float(np.finfo(np.float32).max)
_CHUNK = 16 * 1024 * 1024


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


def _fail(path: Path, message: str) -> InvalidAdapter:
    return InvalidAdapter(f"{path.name}: {message}")


def _decode(raw: bytes | bytearray, dtype: str) -> np.ndarray:
    """Little-endian bytes as float32 (F16, BF16, F32) or float64 (F64)."""
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        np.left_shift(bits, 16, out=bits)
        return bits.view(np.float32)
    array = np.frombuffer(raw, dtype=_NUMPY[dtype])
    return array if dtype == "F64" else array.astype(np.float32, copy=False)


def _check_values(path: Path, name: str, array: np.ndarray) -> None:
    if not array.size:
        return
    low, high = float(array.min()), float(array.max())  # NaN propagates into both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise _fail(path, f"tensor {name} contains NaN or Inf values")
    if low < -_F32_MAX or high > _F32_MAX:
        raise _fail(path, f"tensor {name} holds values beyond the float32 range")


class WeightsFile:
    """A safetensors file whose header passed every check, open until ``close``."""

    def __init__(
        self,
        path: Path,
        fd: int,
        stat: os.stat_result,
        tensors: dict[str, TensorEntry],
        metadata: dict[str, str],
        head: bytes,
    ) -> None:
        self.path, self.size, self.tensors, self.metadata = path, stat.st_size, tensors, metadata
        self._fd, self._stat = fd, stat
        # What was validated, to compare with what ``digest`` hashes: the length prefix and
        # header, and the sha256 of each tensor's bytes as ``read``/``check`` saw them.
        self._head = (len(head), hashlib.sha256(head).digest())
        self._seen: dict[str, bytes] = {}

    def __enter__(self) -> WeightsFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _bytes(self, start: int, length: int) -> bytearray:
        buffer = bytearray(length)
        view, done = memoryview(buffer), 0
        while done < length:
            got = os.preadv(self._fd, [view[done:]], start + done)
            if got <= 0:
                raise _fail(self.path, "the file changed while it was read")
            done += got
        return buffer

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` (bf16/fp16 widened to float32, F64 kept), checked to be finite."""
        entry = self.tensors[name]
        raw = self._bytes(entry.start, entry.end - entry.start)
        self._seen[name] = hashlib.sha256(raw).digest()
        array = _decode(raw, entry.dtype)
        _check_values(self.path, name, array)
        return array.reshape(entry.shape)

    def check(self, name: str) -> None:
        """Check ``name``'s values as ``read`` does, a chunk at a time (nothing is kept)."""
        entry = self.tensors[name]
        step = _CHUNK - _CHUNK % _FLOAT_DTYPES[entry.dtype]
        hasher = hashlib.sha256()
        for start in range(entry.start, entry.end, step):
            raw = self._bytes(start, min(step, entry.end - start))
            hasher.update(raw)
            _check_values(self.path, name, _decode(raw, entry.dtype))
        self._seen[name] = hasher.digest()

    def digest(self) -> str:
        """``sha256:<hex>`` of the whole file, read again now; every tensor must have been
        ``read`` or ``check``-ed, and the bytes hashed must be the bytes that were checked.
        """
        changed = _fail(self.path, "the file changed while it was read")
        whole = hashlib.sha256()
        head = self._bytes(0, self._head[0])
        if hashlib.sha256(head).digest() != self._head[1]:
            raise changed
        whole.update(head)
        for entry in sorted(self.tensors.values(), key=lambda e: e.start):
            part = hashlib.sha256()
            for start in range(entry.start, entry.end, _CHUNK):
                chunk = self._bytes(start, min(_CHUNK, entry.end - start))
                whole.update(chunk)
                part.update(chunk)
            if self._seen.get(entry.name) != part.digest():
                raise changed
        if os.pread(self._fd, 1, self.size):
            raise _fail(self.path, "the file grew while it was read")
        self.ensure_unchanged()
        return "sha256:" + whole.hexdigest()

    def ensure_unchanged(self) -> None:
        """Refuse a file written to since it was opened (every write moves ``st_ctime``)."""
        now, then = os.fstat(self._fd), self._stat
        same = (now.st_size, now.st_mtime_ns, now.st_ctime_ns) == (
            then.st_size,
            then.st_mtime_ns,
            then.st_ctime_ns,
        )
        if not same:
            raise _fail(self.path, "the file changed while it was read")


def _check_name(path: Path, name: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise _fail(
            path,
            f"tensor names must be printable strings of 1 to {MAX_NAME_CHARS} characters, "
            f"got {name[:80]!r}",
        )


def _entry(path: Path, name: str, raw: object, data_start: int, data_len: int) -> TensorEntry:
    _check_name(path, name)
    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data_offsets"}:
        raise _fail(path, f"tensor {name}: entry must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _FLOAT_DTYPES:
        raise _fail(
            path,
            f"tensor {name} has dtype {str(dtype)[:40]!r}; adapter weights must be F16, BF16, "
            "F32 or F64",
        )
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(type(d) is int and 0 <= d < MAX_DIM for d in shape)
    ):
        raise _fail(path, f"tensor {name} has an invalid shape {str(shape)[:80]}")
    if 0 in shape:
        raise _fail(path, f"tensor {name} has shape {shape}: an adapter tensor is never empty")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise _fail(path, f"tensor {name} has data offsets {str(offsets)[:80]} outside the file")
    expected = math.prod(shape) * _FLOAT_DTYPES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise _fail(
            path,
            f"tensor {name} spans {offsets[1] - offsets[0]} bytes but shape {shape} of {dtype} "
            f"needs {expected}",
        )
    return TensorEntry(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def _metadata(path: Path, header: dict[str, object]) -> dict[str, str]:
    # safetensors reads __metadata__ as Option<HashMap<String, String>>: null or a map, never a
    # falsy stand-in such as 0, [] or "".
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "__metadata__ must map strings to strings")
    return metadata


def _parse_header(path: Path, fd: int, size: int) -> tuple[dict[str, object], bytes]:
    """The header as JSON, and the bytes it came from (length prefix included)."""
    prefix = os.pread(fd, 8, 0)
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
    header_bytes = os.pread(fd, header_len, 8)
    if len(header_bytes) != header_len:
        raise _fail(path, "the file changed while it was read")
    header = strict_json.loads(header_bytes, what=f"{path.name}: header", max_values=_MAX_VALUES)
    if not isinstance(header, dict):
        raise _fail(path, "header must be a JSON object; not a safetensors file")
    return header, prefix + header_bytes


def _read_layout(path: Path, fd: int, stat: os.stat_result, max_bytes: int) -> WeightsFile:
    size = stat.st_size
    if size > max_bytes:
        raise _fail(path, f"{size} bytes is over the {max_bytes}-byte limit for adapter weights")
    header, head = _parse_header(path, fd, size)
    data_start = len(head)
    metadata = _metadata(path, header)
    if len(header) > MAX_TENSORS:
        raise _fail(path, f"{len(header)} tensors; at most {MAX_TENSORS} are read")
    data_len = size - data_start
    entries = [_entry(path, n, raw, data_start, data_len) for n, raw in header.items()]
    if not entries:
        raise _fail(path, "contains no tensors")
    _check_layout(path, entries, data_start, size)
    return WeightsFile(path, fd, stat, {e.name: e for e in entries}, metadata, head)


def open_weights(path: Path, *, max_bytes: int) -> WeightsFile:
    """Open ``path`` and check its safetensors header; tensors are read later, on demand.

    Use it as a context manager: the file stays open so every read is of the same file.
    """
    fd = open_fd(path)
    try:
        return _read_layout(path, fd, os.fstat(fd), max_bytes)
    except BaseException:
        os.close(fd)
        raise


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
