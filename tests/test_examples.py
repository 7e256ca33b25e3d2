"""A trained example stance is the same bytes in every process, so re-running the demo on the
same home (even after its training cache is gone) republishes it as a no-op instead of
conflicting with itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from examples.stances import examples
from examples.stances.train import TrainSettings, train
from tests.tiny_lm import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
STANCE = "curious-uncertainty"
SETTINGS = TrainSettings(steps=2, max_length=512)
TRAIN = f"""
import sys, torch
from pathlib import Path
from examples.stances import examples
from examples.stances.train import TrainSettings, train
from tests.tiny_lm import tiny_model, tiny_tokenizer
torch.set_num_threads(1)
pairs = examples({STANCE!r})
train(tiny_model(), tiny_tokenizer(), pairs, {SETTINGS!r}, Path(sys.argv[1]), log=lambda _: None)
"""
ORDER = "print(list({'q_proj', 'v_proj'}))"


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "adapter").iterdir())}


def _set_order(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run(
        [sys.executable, "-c", ORDER], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_trained_stance_is_the_same_bytes_whatever_the_string_hashing(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny_model(), tiny_tokenizer(), examples(STANCE), SETTINGS, tmp_path / "here",
              log=lambda _: None)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    here_order = str(list({"q_proj", "v_proj"}))
    other = next(s for s in map(str, range(64)) if _set_order(s) != here_order)  # sets apart
    env = {**os.environ, "PYTHONHASHSEED": other}  # PEFT saves target_modules from a set
    there = tmp_path / "there"
    subprocess.run([sys.executable, "-c", TRAIN, str(there)], cwd=ROOT, env=env, check=True)
    first, second = _files(tmp_path / "here"), _files(there)
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(first)
    assert first == second
