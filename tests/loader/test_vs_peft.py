"""RoleSet against PEFT, the outside oracle: seeded random scenarios and half-precision numerics.

A bounded run of the differential test (``tests/loader/differential.py``): one seeded scenario
per family and dtype below, each about 15 cases. The longer run, over all seven families and
float16 too: ``python benchmarks/roleset_vs_peft.py --scenarios 84``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

from registry.embedded import EmbeddedRegistry
from registry.loader import RoleSet
from tests.factories import make_adapter
from tests.loader.differential import FAMILIES, Scenario, logits

SUITE = [(f, d) for f in ("llama", "qwen2", "gpt2", "opt") for d in ("float32", "bfloat16")]
SUITE += [("phi", "float16"), ("gpt_neox", "float32")]
KINDS = {"base", "single", "switch", "mix", "batch", "evict"}


@pytest.mark.parametrize(("family", "dtype"), SUITE, ids=[f"{f}-{d}" for f, d in SUITE])
def test_random_scenarios_match_peft(
    family: str, dtype: str, catalog: EmbeddedRegistry, tmp_path: Path
) -> None:
    seed = 2100 + SUITE.index((family, dtype))
    cases = Scenario(seed, catalog, tmp_path, families=(family,), dtypes=(dtype,)).run()
    failed = [str(case) for case in cases if not case.ok]
    assert not failed, "\n".join(failed)
    assert {case.kind for case in cases} >= KINDS
    # One role at a time runs PEFT's own operations in PEFT's order: the same bits.
    alone = [case for case in cases if case.kind in {"base", "single", "switch", "evict"}]
    assert all(case.identical for case in alone), [str(c) for c in alone if not c.identical]


def test_half_precision_default_is_peft_default_and_dtype_is_peft_without_autocast(
    catalog: EmbeddedRegistry, tmp_path: Path
) -> None:
    """Qwen2, r=1, alpha 32, rsLoRA (the issue's worst case): bit for bit PEFT's default
    (float32 adapters); with ``dtype=torch.bfloat16``, PEFT with autocast_adapter_dtype=False."""
    torch.manual_seed(4)
    base = FAMILIES["qwen2"].build().to(torch.bfloat16).eval()
    folder = make_adapter(
        tmp_path / "worst", seed=4, r=1, lora_alpha=32, use_rslora=True, std=0.2,
        target_modules="all-linear", model=copy.deepcopy(base).float(),
        base_model="stance-test/qwen2",
    )  # fmt: skip
    base.config.name_or_path = "stance-test/qwen2"
    catalog.publish(folder, "worst@1.0.0")
    ids = torch.randint(0, 128, (3, 7), generator=torch.Generator().manual_seed(0))
    peft_default = PeftModel.from_pretrained(copy.deepcopy(base), folder).eval()
    peft_bf16 = PeftModel.from_pretrained(
        copy.deepcopy(base), folder, autocast_adapter_dtype=False
    ).eval()
    lora_a = peft_bf16.base_model.model.model.layers[0].self_attn.q_proj.lora_A
    assert lora_a.default.weight.dtype == torch.bfloat16  # PEFT's half-precision option
    for dtype, peft in [(None, peft_default), (torch.bfloat16, peft_bf16)]:
        with RoleSet(copy.deepcopy(base), registry=catalog, dtype=dtype) as roles:
            roles.load("worst@1.0.0")
            roles.switch("worst")
            assert torch.equal(logits(roles, ids), logits(peft, ids))
    assert not torch.equal(logits(peft_default, ids), logits(peft_bf16, ids))


def test_half_precision_lora_maths_fails_the_half_precision_bound(
    catalog: EmbeddedRegistry, tmp_path: Path
) -> None:
    """The bound has teeth: the old default (LoRA maths in the model's bfloat16) misses it on
    this seed (in 9% of 1,188 cases of the long run), the new default passes it."""
    kwargs: dict[str, Any] = {"families": ("qwen2",), "dtypes": ("bfloat16",)}
    old = Scenario(2207, catalog, tmp_path / "old", adapter_dtype=torch.bfloat16, **kwargs)
    assert any(not case.ok for case in old.run())
    assert all(case.ok for case in Scenario(2207, catalog, tmp_path / "new", **kwargs).run())


def test_default_adapter_dtype_follows_peft(catalog: EmbeddedRegistry) -> None:
    """float32 adapters on float16/bfloat16 models; a float32 or float64 model keeps its own."""
    for model_dtype, expected in [
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ]:
        model = FAMILIES["llama"].build().to(model_dtype)
        with RoleSet(model, registry=catalog) as roles:
            assert roles._dtype == expected
