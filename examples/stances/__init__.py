"""The experiment's three epistemic stances: hand-written data, one base model, three lenses.

``data/<stance>.train.jsonl`` holds the prompt/response pairs a stance is trained on and
``data/<stance>.heldout.jsonl`` the prompts (with reference responses) that training never
sees. All three stances answer the same prompts, so the only thing that differs between
their data is the voice: what the adapters can learn is the stance, not the topics.

    python -m examples.stances.train OUT_DIR     # train (cached), see train.py
    python -m examples.stances.report            # the measured report on the published roles
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from transformers import LlamaConfig

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# SmolLM2-135M's published architecture (benchmarks/loader.py builds models of this shape).
SMOLLM2_135M = LlamaConfig(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    tie_word_embeddings=True,
)
STANCES = ("curious-uncertainty", "confident-expertise", "engaged-difficulty")
DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str


def data_file(stance: str, split: str) -> Path:
    """The JSONL file of one stance's ``train`` or ``heldout`` split."""
    if stance not in STANCES or split not in ("train", "heldout"):
        raise ValueError(f"no data for stance {stance!r}, split {split!r}")
    return DATA / f"{stance}.{split}.jsonl"


def examples(stance: str, split: str = "train") -> list[Example]:
    """The pairs of one stance's split, in file order."""
    lines = data_file(stance, split).read_text(encoding="utf-8").splitlines()
    return [Example(**json.loads(line)) for line in lines if line.strip()]


def data_digest(stance: str, split: str = "train") -> str:
    """sha256 of the split's bytes: trained adapters are cached under it."""
    return hashlib.sha256(data_file(stance, split).read_bytes()).hexdigest()
