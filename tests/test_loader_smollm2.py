"""The loader on the real SmolLM2-135M-Instruct: two roles, PEFT's logits, switching, a batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

from examples.smollm2 import HUB_ID, smollm2
from registry.embedded import EmbeddedRegistry
from registry.loader import RoleSet
from tests.factories import make_adapter

pytestmark = pytest.mark.slow


@torch.no_grad()
def _logits(forward: Callable[..., Any], ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
    return forward(ids, **kwargs).logits


def test_real_model_roles_match_peft_and_switch(tmp_path: Path) -> None:
    model = smollm2()
    curious = make_adapter(tmp_path / "curious", seed=1, model=model, base_model=HUB_ID)
    confident = make_adapter(
        tmp_path / "confident",
        seed=2,
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        model=model,
        base_model=HUB_ID,
    )
    ids = torch.randint(
        0, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0)
    )
    rows = ["confident", "__base__", "curious"]
    with EmbeddedRegistry() as registry, RoleSet(model, registry=registry) as roles:
        registry.publish(curious, "curious@1.0.0")
        registry.publish(confident, "confident@1.0.0")
        roles.load("curious@^1")
        roles.load("confident")
        ours: dict[str | None, torch.Tensor] = {}
        for name in ["curious", "confident", "curious", None]:
            roles.switch(name)
            ours.setdefault(name, _logits(roles, ids))
            assert torch.equal(_logits(roles, ids), ours[name])
        mixed = _logits(roles, ids, adapter_names=rows)
    ref = PeftModel.from_pretrained(model, curious, adapter_name="curious").eval()
    ref.load_adapter(confident, adapter_name="confident")
    for name in ["curious", "confident"]:
        ref.set_adapter(name)
        torch.testing.assert_close(ours[name], _logits(ref, ids), atol=1e-4, rtol=0)
    with ref.disable_adapter():
        assert torch.equal(ours[None], _logits(ref, ids))
    torch.testing.assert_close(mixed, _logits(ref, ids, adapter_names=rows), atol=1e-4, rtol=0)
