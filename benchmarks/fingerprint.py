"""What the closed forms of registry/lora/fingerprint.py save over materialising ``dW = s * B @ A``.

    python benchmarks/fingerprint.py [--repeat N]

Every figure is measured in this one run and is the median of N timings (the machine is
shared and noisy). Both sides of the ||dW||_F rows use numpy float32, so the ratio is the
algorithm's; the registry's own functions widen to float64 and are timed as they ship.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from registry.lora.fingerprint import compute_fingerprint, delta_norm, spectrum  # noqa: E402
from registry.lora.format import LoraModule  # noqa: E402

WIDTH = 4096
LAYERS = 32
SCALING = 2.0  # lora_alpha 16 at r 8


def _median_seconds(fn: Callable[[], object], repeat: int, number: int = 1) -> float:
    """Median over ``repeat`` samples of the mean of ``number`` calls, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def _factors(rng: np.random.Generator, r: int) -> tuple[np.ndarray, np.ndarray]:
    # Python-float factors: a numpy float64 scalar would promote the arrays to float64 (NEP 50).
    a = rng.standard_normal((r, WIDTH), dtype=np.float32) * (1 / WIDTH**0.5)
    b = rng.standard_normal((WIDTH, r), dtype=np.float32) * 0.01
    assert a.dtype == b.dtype == np.float32
    return a, b


def _trace_norm32(a: np.ndarray, b: np.ndarray) -> float:
    return SCALING * float(np.sqrt(np.einsum("ij,ji->", b.T @ b, a @ a.T)))


def _materialised_norm32(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(SCALING * (b @ a)))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:10.3f} ms"


def _row(what: str, closed: float, direct: float, note: str = "") -> None:
    print(f"{what:<34} {_ms(closed)} {_ms(direct)} {direct / closed:10.0f}x  {note}")


def _norm_rows(rng: np.random.Generator, repeat: int) -> None:
    for r in (8, 64):
        a, b = _factors(rng, r)
        trace = _median_seconds(lambda a=a, b=b: _trace_norm32(a, b), repeat, number=50)
        shipped = _median_seconds(lambda a=a, b=b: delta_norm(a, b, SCALING), repeat, number=50)
        direct = _median_seconds(lambda a=a, b=b: _materialised_norm32(a, b), repeat)
        exact = _materialised_norm32(a.astype(np.float64), b.astype(np.float64))
        errors = [abs(f(a, b) / exact - 1) for f in (_trace_norm32, _materialised_norm32)]
        note = "rel. error vs f64 dW: {:.0e} | {:.0e}"
        _row(f"||dW||_F r={r}, trace f32", trace, direct, note.format(*errors))
        error = abs(delta_norm(a, b, SCALING) / exact - 1)
        _row(f"||dW||_F r={r}, delta_norm (f64)", shipped, direct, note.format(error, errors[1]))


def _spectrum_rows(rng: np.random.Generator, repeat: int) -> None:
    factors = {r: _factors(rng, r) for r in (8, 64)}
    a, b = factors[8]
    dw = SCALING * (b @ a)
    start = time.perf_counter()
    full = np.linalg.svd(dw, compute_uv=False)
    svd = time.perf_counter() - start
    del dw
    error = np.max(np.abs(spectrum(a, b, SCALING) - full[:8])) / full[0]
    for r, (a, b) in factors.items():
        qr = _median_seconds(lambda a=a, b=b: spectrum(a, b, SCALING), repeat, number=5)
        # The full SVD costs O(n^3) whatever the rank of dW, so one timing serves both rows.
        note = (
            f"max |diff| / s_1 vs that SVD: {error:.0e}" if r == 8 else "same full-SVD time as r=8"
        )
        _row(f"spectrum r={r}, 2 QR + rxr SVD", qr, svd, note)


def _adapter(rng: np.random.Generator) -> list[LoraModule]:
    modules = []
    for layer in range(LAYERS):
        for name in ("q_proj", "v_proj"):
            a, b = _factors(rng, 8)
            path = f"model.layers.{layer}.self_attn.{name}"
            modules.append(LoraModule(path, layer, name, a, b, SCALING))
    return modules


def _materialised_norms(modules: list[LoraModule]) -> list[float]:
    return [float(np.linalg.norm(m.scaling * (m.b @ m.a))) for m in modules]


def _adapter_row(rng: np.random.Generator, repeat: int) -> None:
    modules = _adapter(rng)
    fingerprint = compute_fingerprint(modules)
    closed = _median_seconds(lambda: compute_fingerprint(modules), repeat)
    direct = _median_seconds(lambda: _materialised_norms(modules), repeat)
    error = max(
        abs(m.delta_norm / n - 1)
        for m, n in zip(fingerprint.modules, _materialised_norms(modules), strict=True)
    )
    _row("whole adapter, 64 modules", closed, direct, f"max rel. diff f64 vs f32: {error:.0e}")


def main() -> None:
    """Print every timing of one run as a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timings per figure (median)")
    repeat = parser.parse_args().repeat
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    print(
        f"numpy {np.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"median of {repeat}; d_in = d_out = {WIDTH}, s = {SCALING}"
    )
    print(f"{'':<34} {'closed form':>13} {'materialised':>13} {'ratio':>11}")
    _norm_rows(rng, repeat)
    _spectrum_rows(rng, repeat)
    _adapter_row(rng, repeat)
    print(
        f"\n||dW||_F rows: materialised = np.linalg.norm(s * B @ A) in float32, median of "
        f"{repeat};\n  errors are closed form | materialised, against dW materialised in float64."
        "\nspectrum rows: materialised = ONE np.linalg.svd(compute_uv=False) of the "
        f"float32 {WIDTH}x{WIDTH} dW, timed once\n  (too slow to repeat); the QR route runs "
        "in float64 as shipped.\nwhole adapter: compute_fingerprint (float64: norms, spectra, "
        f"effective ranks, aggregates) of a\n  synthesised {LAYERS}-layer q/v rank-8 adapter vs "
        "materialising every dW in float32 and taking its norm only.\n"
        f"total run time {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
