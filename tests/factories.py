"""Build real PEFT LoRA adapters on the fly: tiny random transformers models, saved by PEFT."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

TINY_BASE = "stance-test/tiny-llama"
TINY_GPT2 = "stance-test/tiny-gpt2"


@functools.cache
def tiny_llama_config(layers: int = 4, hidden: int = 64) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=128,
    )


def tiny_llama(seed: int = 0, **config: Any) -> LlamaForCausalLM:
    """A tiny random Llama; the same seed always gives the same base weights."""
    torch.manual_seed(seed)
    # A copy: models own their config, and the cached one must not change under other tests.
    return LlamaForCausalLM(copy.deepcopy(tiny_llama_config(**config))).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(n_embd=64, n_layer=3, n_head=4, vocab_size=256, n_positions=128)
    return GPT2LMHeadModel(cfg).eval()


def make_adapter(
    dest: Path,
    *,
    seed: int = 1,
    r: int = 8,
    lora_alpha: float = 16,
    target_modules: Any = ("q_proj", "v_proj"),
    trained: bool = True,
    dtype: torch.dtype = torch.float32,
    base_model: str | None = TINY_BASE,
    model: torch.nn.Module | None = None,
    std: float = 0.1,
    save_embedding_layers: bool | str = "auto",
    **lora: Any,
) -> Path:
    """Save a PEFT LoRA adapter to ``dest``; ``trained`` gives lora_B random (non-zero) values."""
    base = model if model is not None else tiny_llama()
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=targets, **lora)
    peft_model = get_peft_model(base, config)
    if trained:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * std)
    peft_model = peft_model.to(dtype)
    peft_model.save_pretrained(dest, save_embedding_layers=save_embedding_layers)
    config_path = dest / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(saved, indent=2))
    # get_peft_model wraps the base in place; unwrap so a caller's model can be reused.
    peft_model.unload()
    return dest
