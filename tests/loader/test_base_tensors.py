"""Adapters that carry base-model tensors (PEFT's save_embedding_layers), and embedding LoRA.

PEFT's default save (``save_embedding_layers="auto"``) writes a targeted lm_head's own weight
(and bias, on Phi) beside its LoRA. RoleSet loads such a file when those tensors equal the
model's (loading them into it would change nothing) and refuses it, naming the tensor, when they
differ: loading them would replace base-model weights under every role.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import PreTrainedModel

from registry.embedded import EmbeddedRegistry
from registry.errors import InvalidAdapter
from registry.loader import RoleSet
from registry.loader.adapter import plan_adapter
from tests.factories import make_adapter
from tests.loader.differential import FAMILIES, logits

IDS = torch.randint(0, 128, (3, 6), generator=torch.Generator().manual_seed(0))


def family_model(family: str, *, seed: int = 0, **config: object) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = FAMILIES[family].build()
    if config:  # the same family with other dimensions
        torch.manual_seed(seed)
        model = type(model)(type(model.config)(**{**model.config.to_dict(), **config}))
    model.config.name_or_path = f"stance-test/{family}"
    return model.eval()


def saved(
    root: Path, family: str, targets: list[str], model: PreTrainedModel | None = None, **kw: object
) -> Path:
    model = model if model is not None else family_model(family)
    return make_adapter(
        root / f"{family}-{'-'.join(targets)}-{kw.get('save_embedding_layers', 'auto')}",
        model=copy.deepcopy(model).float(),
        base_model=f"stance-test/{family}",
        target_modules=targets,
        fan_in_fan_out=FAMILIES[family].conv1d,
        **kw,
    )


def keys(folder: Path) -> set[str]:
    with safe_open(folder / "adapter_model.safetensors", "pt") as fh:
        return {key for key in fh.keys() if "lora_" not in key}  # noqa: SIM118


@pytest.mark.parametrize("save", ["auto", False], ids=["peft-default", "no-embedding-layers"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_lm_head_lora_loads_in_both_save_modes_and_equals_peft(
    family: str, save: str | bool, catalog: EmbeddedRegistry, tmp_path: Path
) -> None:
    first = FAMILIES[family].linear[0]
    folder = saved(tmp_path, family, ["lm_head", first], save_embedding_layers=save)
    assert keys(folder) == ({"base_model.model.lm_head.base_layer.weight"} if save else set())
    spec = f"{family}-head-{'default' if save else 'plain'}@1.0.0"
    catalog.publish(folder, spec)
    with RoleSet(family_model(family), registry=catalog) as roles:
        roles.load(spec, name="head")
        roles.switch("head")
        ours = logits(roles, IDS)
    ref = PeftModel.from_pretrained(family_model(family), folder).eval()
    assert torch.equal(ours, logits(ref, IDS))
    assert not torch.equal(ours, logits(family_model(family), IDS))


def test_phi_lm_head_with_bias_is_checked_tensor_by_tensor(tmp_path: Path) -> None:
    """Phi's lm_head has a bias: PEFT saves lm_head.base_layer.weight and .bias."""
    model = family_model("phi")
    folder = saved(tmp_path, "phi", ["lm_head", "fc1"])
    assert keys(folder) == {
        "base_model.model.lm_head.base_layer.weight",
        "base_model.model.lm_head.base_layer.bias",
    }

    def plan(on: PreTrainedModel) -> list[str]:
        found = plan_adapter(
            folder, dict(on.named_modules()), label="phi", model="stance-test/phi",
            allow_base_mismatch=False,
        )  # fmt: skip
        return sorted(module.path for module in found.modules)

    assert plan(model) == ["lm_head", "model.layers.0.mlp.fc1", "model.layers.1.mlp.fc1"]
    with torch.no_grad():
        model.lm_head.bias[3] += 0.25
    with pytest.raises(
        InvalidAdapter,
        match=r"phi: adapter_model.safetensors carries base_model\.model\.lm_head\.base_layer\."
        r"bias \(PEFT's save_embedding_layers\), which differs from this model's lm_head\.bias "
        r"\(max \|diff\| 0\.25\); RoleSet does not replace base-model weights",
    ):
        plan(model)


def test_phi_lm_head_default_save_publishes_and_equals_peft(
    catalog: EmbeddedRegistry, tmp_path: Path
) -> None:
    folder = saved(tmp_path, "phi", ["lm_head", "fc1"])
    catalog.publish(folder, "phi-head@1.0.0")
    with RoleSet(family_model("phi"), registry=catalog) as roles:
        roles.load("phi-head@1.0.0", name="head")
        roles.switch("head")
        ours = logits(roles, IDS)
    ref = PeftModel.from_pretrained(family_model("phi"), folder).eval()
    assert torch.equal(ours, logits(ref, IDS))


def test_base_tensors_that_differ_from_the_model_are_refused_before_anything_moves(
    catalog: EmbeddedRegistry, tmp_path: Path
) -> None:
    catalog.publish(saved(tmp_path, "llama", ["lm_head", "q_proj"]), "head@1.0.0")
    changed = family_model("llama")
    with torch.no_grad():
        changed.lm_head.weight[5, 7] += 0.5
    roles = RoleSet(changed, registry=catalog)
    with pytest.raises(
        InvalidAdapter,
        match=r"carries base_model\.model\.lm_head\.base_layer\.weight \(PEFT's "
        r"save_embedding_layers\), which differs from this model's lm_head\.weight \(max \|diff\| "
        r"0\.5\); RoleSet does not replace base-model weights: load it onto the model it was",
    ):
        roles.load("head@1.0.0")
    assert len(roles) == 0 and not roles._sites


def test_saved_embeddings_load_when_loading_them_would_change_nothing(
    catalog: EmbeddedRegistry, tmp_path: Path
) -> None:
    """save_embedding_layers=True saves embed_tokens.weight and lm_head.weight as they are. A
    float32 file on a bfloat16 model rounds to the model's own weights: loaded. A bfloat16 file
    on the float32 model would round the model's weights (PEFT loads them): refused."""
    model = family_model("llama")
    folder = saved(tmp_path, "llama", ["q_proj"], model=model, save_embedding_layers=True)
    assert keys(folder) == {
        "base_model.model.model.embed_tokens.weight",
        "base_model.model.lm_head.weight",
    }
    catalog.publish(folder, "embeddings@1.0.0")
    half = copy.deepcopy(model).to(torch.bfloat16)
    with RoleSet(copy.deepcopy(half), registry=catalog) as roles:
        roles.load("embeddings@1.0.0", name="q")
        roles.switch("q")
        ours = logits(roles, IDS)
    assert torch.equal(ours, logits(PeftModel.from_pretrained(half, folder).eval(), IDS))
    rounded = saved(
        tmp_path / "bf16", "llama", ["q_proj"], model=model, save_embedding_layers=True,
        dtype=torch.bfloat16,
    )  # fmt: skip
    catalog.publish(rounded, "rounded@1.0.0")
    with pytest.raises(
        InvalidAdapter,
        match=r"carries base_model\.model\.lm_head\.weight \(PEFT's save_embedding_layers\), "
        r"which differs from this model's lm_head\.weight \(max \|diff\| 0\.000\d+, bfloat16 "
        r"in the file, float32 in the model\)",
    ):
        RoleSet(model, registry=catalog).load("rounded@1.0.0")
    resized = RoleSet(family_model("llama", vocab_size=130), registry=catalog)
    with pytest.raises(
        InvalidAdapter,
        match=r"carries base_model\.model\.lm_head\.weight of shape \[128, 32\], but this "
        r"model's lm_head\.weight is \[130, 32\] \(resized embeddings\?\)",
    ):
        resized.load("embeddings@1.0.0")


def test_embedding_lora_is_refused_as_such(catalog: EmbeddedRegistry, tmp_path: Path) -> None:
    catalog.publish(saved(tmp_path, "llama", ["embed_tokens", "q_proj"]), "embed@1.0.0")
    roles = RoleSet(family_model("llama"), registry=catalog)
    with pytest.raises(
        InvalidAdapter,
        match=r"embed@1\.0\.0: LoRA on the embedding model\.embed_tokens \(lora_embedding_A/B\) "
        r"is not supported; RoleSet adapts Linear and Conv1D modules only",
    ):
        roles.load("embed@1.0.0")
    assert len(roles) == 0 and not roles._sites


@pytest.mark.parametrize(
    ("family", "saved_names"),
    [
        ("gpt_neox", {"gpt_neox.embed_in.weight", "lm_head.weight"}),  # embed_out before v5
        ("gpt2", {"transformer.wte.weight", "lm_head.weight"}),
    ],
)
def test_saved_embeddings_of_other_families_publish_and_load(
    family: str, saved_names: set[str], catalog: EmbeddedRegistry, tmp_path: Path
) -> None:
    """PEFT names the saved embeddings after the model's own modules (GPT-NeoX: embed_in), not
    only Llama's embed_tokens."""
    model = family_model(family)
    first = FAMILIES[family].linear[0]
    folder = saved(tmp_path, family, [first], model=model, save_embedding_layers=True)
    assert keys(folder) == {f"base_model.model.{name}" for name in saved_names}
    catalog.publish(folder, f"{family}-embeddings@1.0.0")
    with RoleSet(family_model(family), registry=catalog) as roles:
        roles.load(f"{family}-embeddings@1.0.0", name="r")
        roles.switch("r")
        ours = logits(roles, IDS)
    ref = PeftModel.from_pretrained(family_model(family), folder).eval()
    assert torch.equal(ours, logits(ref, IDS))
