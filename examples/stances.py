"""Build the three example stances as real PEFT adapters for SmolLM2-135M-Instruct's shapes.

Each stance is rank 8 on q_proj/v_proj, saved by PEFT itself. The weights are synthetic (no
training happens here) but shaped like a trained adapter: each stance concentrates its update
in different layers, so `stance show` draws a different heat map for each.

    python examples/stances.py OUT_DIR
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# SmolLM2-135M's published architecture; weights are not needed to shape an adapter.
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
# stance -> (seed, where along the depth its update peaks, 0 = first layer, 1 = last)
STANCES = {
    "curious-uncertainty": (11, 0.8),
    "confident-expertise": (12, 0.2),
    "engaged-difficulty": (13, 0.5),
}


def build(dest: Path, *, seed: int, peak: float, version_shift: float = 0.0) -> Path:
    """Save a q/v rank-8 adapter whose lora_B magnitude follows a bump centred at ``peak``."""
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(SMOLLM2_135M)
    model = model.to_empty(device="cpu")
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    generator = torch.Generator().manual_seed(seed)
    layers = SMOLLM2_135M.num_hidden_layers
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" not in name:
                continue
            layer = int(name.split(".layers.")[1].split(".")[0])
            depth = layer / (layers - 1)
            gain = 0.02 + math.exp(-(((depth - peak - version_shift) / 0.15) ** 2))
            scale = 0.05 * gain if "lora_B" in name else 1 / math.sqrt(param.shape[1])
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(dest)
    config_path = dest / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = BASE_MODEL
    # PEFT writes target_modules from a set, in an order that changes with each process's
    # string hashing: sorted, the same adapter is the same bytes (and a re-publish a no-op).
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return dest


def main(out: Path) -> None:
    for name, (seed, peak) in STANCES.items():
        print(build(out / name, seed=seed, peak=peak))
    # A second version of one stance, to show ranges, aliases and yanks.
    print(build(out / "curious-uncertainty-1.1", seed=11, peak=0.8, version_shift=-0.1))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/adapters"))
