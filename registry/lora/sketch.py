"""Random-projection sketches of adapter updates: a cheap first pass for "similar adapters".

Per module, ``y = s (Go^T B)(A Gi)`` is a k x k projection of ``dW = s B A`` with fixed Gaussian
matrices (entries N(0, 1/k), one per width and side), so ``E[<y1, y2>] = <dW1, dW2>_F``. It costs
O(r k (d_in + d_out)) at publish and k^2 floats per module to store; the candidates it ranks are
then re-scored exactly with ``fingerprint.similarity``.

A projection takes 64 bytes per unit of width: cached only while narrow (a 4096-wide one is
256 KiB), and otherwise drawn block by block from the same seeded stream, so an 8M-wide
upload neither holds 512 MiB at publish nor leaves it cached afterwards.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from registry.lora.format import LoraModule

K = 8
SEED = 0x5CE7C4


_CACHED_WIDTH = 1 << 14  # widths up to this are cached: at most 1 MiB each
_BLOCK = 1 << 16  # rows drawn at a time for wider projections: 4 MiB


def _stream(width: int, side: int) -> np.random.Generator:
    return np.random.default_rng([SEED, width, side])


@functools.lru_cache(maxsize=32)
def _projection(width: int, side: int) -> np.ndarray:
    return _stream(width, side).standard_normal((width, K)) / math.sqrt(K)


def _blocks(width: int, side: int) -> Iterator[tuple[int, np.ndarray]]:
    """The rows of the (width, K) projection as (start, block): the same numbers, in order."""
    if width <= _CACHED_WIDTH:
        yield 0, _projection(width, side)
        return
    rng = _stream(width, side)  # one stream: drawing it in blocks gives the same values
    for start in range(0, width, _BLOCK):
        rows = min(_BLOCK, width - start)
        yield start, rng.standard_normal((rows, K)) / math.sqrt(K)


def sketch_row(m: LoraModule) -> np.ndarray:
    """The flattened k x k projection ``s (Go^T B)(A Gi)`` of one module's update."""
    rank = m.a.shape[0]
    left = np.zeros((K, rank))
    for start, block in _blocks(m.b.shape[0], 0):
        part = np.asarray(m.b[start : start + len(block)], dtype=np.float64)
        left += block.T @ part  # (k, r)
    right = np.zeros((rank, K))
    for start, block in _blocks(m.a.shape[1], 1):
        part = np.asarray(m.a[:, start : start + len(block)], dtype=np.float64)
        right += part @ block  # (r, k)
    return (m.scaling * left @ right).ravel()


@dataclass(frozen=True)
class Sketch:
    """Per module path, a flattened k x k projection of its update; ``norm`` is the exact total."""

    rows: dict[str, np.ndarray]
    norm: float

    def inner(self, other: Sketch) -> float:
        """An unbiased estimate of ``<dW_self, dW_other>_F`` over the shared modules."""
        return float(sum(self.rows[p] @ other.rows[p] for p in self.rows.keys() & other.rows))

    def cosine(self, other: Sketch) -> float:
        if self.norm == 0.0 or other.norm == 0.0:
            return 0.0
        return max(-1.0, min(1.0, self.inner(other) / (self.norm * other.norm)))

    def encode(self) -> bytes:
        paths = sorted(self.rows)
        header = json.dumps({"k": K, "norm": self.norm, "paths": paths}).encode()
        data = np.stack([self.rows[p] for p in paths]).astype("<f4").tobytes() if paths else b""
        return struct.pack("<I", len(header)) + header + data

    @classmethod
    def decode(cls, blob: bytes) -> Sketch:
        (size,) = struct.unpack_from("<I", blob)
        header = json.loads(blob[4 : 4 + size])
        data = np.frombuffer(blob, dtype="<f4", offset=4 + size).astype(np.float64)
        rows = data.reshape(len(header["paths"]), header["k"] ** 2)
        return cls(dict(zip(header["paths"], rows, strict=True)), header["norm"])


def sketch(modules: Sequence[LoraModule], *, norm: float) -> Sketch:
    """The sketch of an adapter's modules; ``norm`` is its exact total ``||dW||_F``."""
    return Sketch({m.path: sketch_row(m) for m in modules}, norm)
