"""The example stances are the same bytes in every process, so re-running the demo on the same
home republishes them as no-ops instead of conflicting with itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = "import sys; from pathlib import Path; from examples.stances import build; " + (
    "build(Path(sys.argv[1]), seed=11, peak=0.8)"
)


def _built(dest: Path, hash_seed: str) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}  # PEFT saves target_modules from a set
    subprocess.run([sys.executable, "-c", BUILD, str(dest)], cwd=ROOT, env=env, check=True)
    return {p.name: p.read_bytes() for p in sorted(dest.iterdir())}


def _set_order(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    code = "print(list({'q_proj', 'v_proj'}))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_an_example_stance_is_the_same_bytes_whatever_the_string_hashing(tmp_path: Path) -> None:
    seeds = ("0", "3")
    assert _set_order(seeds[0]) != _set_order(seeds[1])  # these seeds do order sets apart
    first, second = _built(tmp_path / "a", seeds[0]), _built(tmp_path / "b", seeds[1])
    assert "adapter_model.safetensors" in first
    assert first == second
