"""Random-projection sketches of adapter updates: a cheap first pass for "similar adapters".

Per module, ``y = s (Go^T B)(A Gi)`` is a k x k projection of ``dW = s B A`` with fixed Gaussian
matrices (entries N(0, 1/k), one per width and side), so ``E[<y1, y2>] = <dW1, dW2>_F``. It costs
O(r k (d_in + d_out)) at publish and k^2 floats per module to store; the candidates it ranks are
then re-scored exactly with ``fingerprint.similarity``.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from registry.lora.format import LoraModule

K = 8
SEED = 0x5CE7C4


@functools.cache
def _projection(width: int, side: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, width, side])
    return rng.standard_normal((width, K)) / math.sqrt(K)


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
    rows = {}
    for m in modules:
        left = _projection(m.b.shape[0], 0).T @ np.asarray(m.b, dtype=np.float64)  # (k, r)
        right = np.asarray(m.a, dtype=np.float64) @ _projection(m.a.shape[1], 1)  # (r, k)
        rows[m.path] = (m.scaling * left @ right).ravel()
    return Sketch(rows, norm)
