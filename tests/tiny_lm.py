"""A tiny causal LM and tokenizer for the example experiment's tests (no registry imports, so a
subprocess that trains one starts fast).

A 2-layer Llama (hidden 32) and a character-level tokenizer built from the shipped data, with
a ChatML template like SmolLM2's.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from examples.stances import STANCES, examples

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|im_start|>", "<|im_end|>"]


@functools.cache
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of the shipped data (sorted: the same ids in every process)."""
    texts = [e.prompt + e.response for s in STANCES for split in ("train", "heldout")
             for e in examples(s, split)]  # fmt: skip
    chars = sorted(set("".join(texts)) | set("userassistant\n"))
    vocab = {token: i for i, token in enumerate([*SPECIAL, "<unk>", *chars])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL})
    tok.chat_template = CHATML
    return tok


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer, 32-wide Llama over the tiny vocabulary; the same seed, the same weights."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tiny_tokenizer()),
        max_position_embeddings=1024,
        initializer_range=0.3,
    )
    return LlamaForCausalLM(config).eval()
