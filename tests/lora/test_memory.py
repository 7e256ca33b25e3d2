"""Memory of publishing a wide adapter, measured in a fresh child process, and of the sketch.

Issue 14: a 32 MiB adapter (r=1, 8,388,608 wide) peaked at 1.27 GiB while publishing, and the
sketch's cached projection kept 64 bytes per unit of width after the call (a 16 MB adapter
left 513 MB held). Inspection now works per module and the projection of a wide module is
drawn block by block.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from registry.lora import sketch as sketch_module
from registry.lora.format import LoraModule
from registry.lora.sketch import sketch_row

WIDTH = 8_388_608
ROOT = Path(__file__).resolve().parents[2]
# What publishing may add to the process's peak RSS. Measured: about 225 MiB (before the
# fix: 611 MiB, and 1.27 GiB through the HTTP upload path).
PEAK_GROWTH_MIB = 320
HELD_AFTER_MIB = 16

CHILD = textwrap.dedent(
    """
    import gc, json, resource, sys, tracemalloc
    from pathlib import Path
    from registry.embedded import EmbeddedRegistry
    from registry.settings import Settings

    registry = EmbeddedRegistry(Settings())
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    registry.publish(Path(sys.argv[1]), "wide@1.0.0")
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": peak - before, "peak_kib": peak, "held": held}))
    """
)


def test_publishing_a_wide_adapter_stays_small(tmp_path: Path) -> None:
    folder = tmp_path / "wide"
    folder.mkdir()
    rng = np.random.default_rng(0)
    save_file(
        {
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": rng.standard_normal(
                (1, WIDTH), dtype=np.float32
            ),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": rng.standard_normal(
                (16, 1), dtype=np.float32
            ),
        },
        str(folder / "adapter_model.safetensors"),
    )
    config = {"peft_type": "LORA", "r": 1, "lora_alpha": 2, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["growth_kib"] < PEAK_GROWTH_MIB * 1024, figures
    assert figures["held"] < HELD_AFTER_MIB * 2**20, figures


def _wide(width: int) -> LoraModule:
    a = np.ones((1, width), dtype=np.float32)
    b = np.ones((4, 1), dtype=np.float32)
    return LoraModule(path="m.0.q", layer=0, module="q", a=a, b=b, scaling=1.0)


def test_nothing_is_held_per_new_width() -> None:
    modules = [_wide(2**20 + i) for i in range(3)]  # 64 MiB of projection each if cached
    gc.collect()
    tracemalloc.start()
    try:
        for m in modules:
            sketch_row(m)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2**20
    assert sketch_module._projection.cache_info().maxsize == 32  # narrow widths: <= 1 MiB each


def test_blockwise_projection_is_the_cached_one() -> None:
    """Drawing the stream in blocks gives the very projection a single draw gives."""
    width = 3 * sketch_module._BLOCK + 7  # several blocks
    whole = sketch_module._stream(width, 1).standard_normal((width, sketch_module.K))
    blocks = np.concatenate([b for _, b in sketch_module._blocks(width, 1)])
    np.testing.assert_array_equal(blocks, whole / np.sqrt(sketch_module.K))
