"""RoleSet against PEFT itself: the same logits for each role, a mixture and a mixed batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import PreTrainedModel

from registry.api import create_app
from registry.embedded import EmbeddedRegistry
from registry.errors import InvalidAdapter, NotFound, RegistryError
from registry.loader import RoleSet
from registry.loader.sites import copy_into, zero
from registry.remote import RemoteRegistry
from registry.settings import Settings
from tests.factories import TINY_BASE, TINY_GPT2, make_adapter, tiny_gpt2, tiny_llama

ATOL = 1e-4  # the bar (float32); single roles come out bit-identical in practice
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = torch.randint(0, 256, (5, 9), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Adapters that differ in rank, targets, dtype and scaling rules; plus refusals."""
    root = tmp_path_factory.mktemp("roles")
    return {
        "curious": make_adapter(root / "curious", seed=1),
        "confident": make_adapter(root / "confident", seed=2),
        "engaged": make_adapter(
            root / "engaged",
            seed=3,
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
            dtype=torch.bfloat16,
        ),
        "patterns": make_adapter(
            root / "patterns",
            seed=4,
            target_modules=ALL_LINEAR,
            rank_pattern={"q_proj": 4, "down_proj": 2},
            alpha_pattern={"v_proj": 32},
            use_rslora=True,
        ),
        "gpt2": make_adapter(
            root / "gpt2",
            seed=5,
            model=tiny_gpt2(),
            base_model=TINY_GPT2,
            target_modules=["c_attn", "c_proj", "c_fc"],
            fan_in_fan_out=True,
        ),
        "narrow": make_adapter(root / "narrow", seed=6, model=tiny_llama(hidden=32)),
        "deeper": make_adapter(root / "deeper", seed=7, model=tiny_llama(layers=6)),
        "elsewhere": make_adapter(root / "elsewhere", seed=8, base_model="someone/else-7b"),
        "dora": make_adapter(root / "dora", seed=9, use_dora=True),
    }


@pytest.fixture(scope="module")
def catalog(
    tmp_path_factory: pytest.TempPathFactory, folders: dict[str, Path]
) -> Iterator[EmbeddedRegistry]:
    """One SQLite catalog for the module (these tests exercise the loader, not the catalog)."""
    home = tmp_path_factory.mktemp("home")
    settings = Settings(
        home=home, database_url=f"sqlite:///{home / 'catalog.db'}", store=(home / "b").as_uri()
    )
    reg = EmbeddedRegistry(settings, actor="test")
    for name, folder in folders.items():
        reg.publish(folder, f"{name}@1.0.0")
    reg.publish(folders["curious"], "swap@1.0.0")
    reg.publish(folders["confident"], "swap@1.1.0")
    reg.publish(folders["curious"], "old@1.0.0")
    reg.yank("old@1.0.0", reason="bad data")
    yield reg
    reg.close()


def base(model: PreTrainedModel | None = None, name: str = TINY_BASE) -> PreTrainedModel:
    model = model if model is not None else tiny_llama()
    model.config.name_or_path = name
    return model


def peft(folders: dict[str, Path], names: list[str], model: nn.Module | None = None) -> PeftModel:
    """The reference: a PeftModel with the same adapters, on an identical base model."""
    ref = PeftModel.from_pretrained(model or tiny_llama(), folders[names[0]], adapter_name=names[0])
    for name in names[1:]:
        ref.load_adapter(folders[name], adapter_name=name)
    return ref.eval()


@torch.no_grad()
def logits(forward: Callable[..., Any], **kwargs: object) -> torch.Tensor:
    return forward(IDS, **kwargs).logits


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def loaded(catalog: EmbeddedRegistry, *names: str, max_resident: int | None = None) -> RoleSet:
    roles = RoleSet(base(), registry=catalog, max_resident=max_resident)
    for name in names:
        roles.load(name)
    return roles


ROLES = ["curious", "confident", "engaged", "patterns"]


def test_every_role_and_the_base_match_peft(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    roles = loaded(catalog, *ROLES)
    ref = peft(folders, ROLES)
    for name in ROLES:
        roles.switch(name)
        ref.set_adapter(name)
        close(logits(roles.model), logits(ref))
        assert roles.active == name
    roles.switch(None)
    with ref.disable_adapter():
        assert torch.equal(logits(roles.model), logits(ref))
    assert roles.active is None


def test_switching_back_and_forth_is_exact(catalog: EmbeddedRegistry) -> None:
    roles = loaded(catalog, *ROLES)
    seen = {}
    for name in [*ROLES, "__base__"]:
        roles.switch(name)
        seen[name] = logits(roles)
    for name in ["curious", "patterns", "curious", "__base__", "engaged", "confident", "curious"]:
        roles.switch(name)
        assert torch.equal(logits(roles), seen[name])


def test_mixture_matches_peft_cat(catalog: EmbeddedRegistry, folders: dict[str, Path]) -> None:
    names = ["curious", "confident", "engaged"]
    roles = loaded(catalog, *names)
    ref = peft(folders, names)
    for i, weights in enumerate(
        [{"curious": 0.7, "confident": 0.3}, dict(zip(names, [0.5, 1.0, -0.25], strict=True))]
    ):
        roles.mix(weights)
        ref.add_weighted_adapter(list(weights), list(weights.values()), f"m{i}", "cat")
        ref.set_adapter(f"m{i}")
        close(logits(roles.model), logits(ref))
        assert roles.active == weights
    roles.switch("engaged")  # the mixed roles are still there, each on its own
    ref.set_adapter("engaged")
    close(logits(roles.model), logits(ref))


def test_rslora_mixture_is_the_exact_cat_construction(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    """PEFT copies use_rslora into the cat adapter and so scales it by sqrt(total rank), not 1."""
    names = ["patterns", "curious"]
    roles = loaded(catalog, *names)
    ref = peft(folders, names)
    ref.add_weighted_adapter(names, [0.5, 2.0], "mix", "cat")
    ref.set_adapter("mix")
    for module in ref.modules():
        if isinstance(module, LoraLayer) and "mix" in module.scaling:
            module.scaling["mix"] = 1.0
    roles.mix({"patterns": 0.5, "curious": 2.0})
    close(logits(roles), logits(ref))


def test_mixed_batch_matches_peft_and_each_row_alone(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    rows = ["curious", "__base__", "engaged", "patterns", "curious"]
    roles = loaded(catalog, *ROLES)
    roles.switch("confident")  # a mixed batch overrides the active role, then restores it
    ref = peft(folders, ROLES)
    mixed = logits(roles, adapter_names=rows)
    close(mixed, logits(ref, adapter_names=rows))
    for i, name in enumerate(rows):
        roles.switch(name)
        close(mixed[i], logits(roles)[i])
    roles.switch("confident")
    ref.set_adapter("confident")
    close(logits(roles), logits(ref))


def test_mixed_batch_generate_repeats_names_for_beams(catalog: EmbeddedRegistry) -> None:
    roles = loaded(catalog, "curious", "engaged")
    prompts = IDS[:3, :5]
    rows = ["engaged", "__base__", "curious"]
    kwargs: dict[str, Any] = {
        "max_new_tokens": 4,
        "do_sample": False,
        "num_beams": 2,
        "pad_token_id": 0,
    }
    together = roles.generate(prompts, adapter_names=rows, **kwargs)
    for i, name in enumerate(rows):
        roles.switch(name)
        assert torch.equal(together[i], roles.generate(prompts[i : i + 1], **kwargs)[0])


def test_bad_adapter_names_are_domain_errors(catalog: EmbeddedRegistry) -> None:
    roles = loaded(catalog, "curious")
    with pytest.raises(NotFound, match="'nobody' is not resident"):
        logits(roles, adapter_names=["curious", "nobody", "curious", "curious", "curious"])
    with pytest.raises(RegistryError, match="adapter_names has 2 entries but the batch has 5"):
        logits(roles, adapter_names=["curious", "__base__"])
    roles.switch("curious")  # a failed batch leaves the active role as it was
    assert roles.active == "curious"
    assert not torch.equal(logits(roles), logits(tiny_llama()))


def test_gpt2_conv1d_fan_in_fan_out_matches_peft(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    roles = RoleSet(base(tiny_gpt2(), TINY_GPT2), registry=catalog)
    roles.load("gpt2")
    ref = peft(folders, ["gpt2"], tiny_gpt2())
    roles.switch("gpt2")
    close(logits(roles), logits(ref))
    rows = ["gpt2", "__base__", "gpt2", "__base__", "__base__"]
    close(logits(roles, adapter_names=rows), logits(ref, adapter_names=rows))


def test_least_recently_used_inactive_role_is_evicted(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    roles = loaded(catalog, "curious", "confident", max_resident=2)
    roles.switch("curious")
    roles.load("engaged")  # confident is the least recently used: evicted
    assert list(roles.resident) == ["curious", "engaged"]
    with pytest.raises(NotFound, match="'confident' is not resident"):
        roles.switch("confident")
    roles.switch("engaged")  # took confident's slot: nothing of confident may leak
    ref = peft(folders, ["engaged", "curious", "patterns"])
    close(logits(roles), logits(ref))
    roles.load("patterns")  # curious was used before engaged
    assert list(roles.resident) == ["engaged", "patterns"]
    roles.switch("patterns")
    ref.set_adapter("patterns")
    close(logits(roles), logits(ref))


def test_reloading_after_other_adapters_reused_the_staging_buffer_is_exact(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    """Kept views alias the one staging buffer: each reload must refill it with its own bytes,
    and views of a buffer that was outgrown must not be used (it still holds older bytes)."""
    roles = loaded(catalog, "curious", "confident")  # same size: the buffer last held confident
    roles.load("patterns")  # all-linear, larger: the buffer is replaced
    ref = peft(folders, ["curious", "confident", "patterns"])
    for _ in range(2):
        for name in ("curious", "patterns", "confident"):
            roles.unload(name)
            roles.load(name)  # the same plan, its bytes read into a buffer others used since
        for name in ("curious", "confident", "patterns"):
            roles.switch(name)
            ref.set_adapter(name)
            close(logits(roles), logits(ref))


def test_slots_grow_past_the_initial_capacity_without_disturbing_roles(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    roles = RoleSet(base(), registry=catalog)
    specs = ["curious", "engaged", "confident"] * 3  # 9 roles: the buffers start with 4 slots
    for i, spec in enumerate(specs):
        roles.load(spec, name=f"r{i}")
    ref = peft(folders, ["curious", "engaged", "confident"])
    expected = {}
    for spec in specs[:3]:
        ref.set_adapter(spec)
        expected[spec] = logits(ref)
    for i, spec in enumerate(specs):
        roles.switch(f"r{i}")
        close(logits(roles), expected[spec])
    rows = ["r0", "r4", "r8", "__base__", "r3"]
    close(
        logits(roles, adapter_names=rows),
        logits(ref, adapter_names=[*specs[:3], "__base__", "curious"]),
    )


def test_eviction_never_drops_an_active_role(catalog: EmbeddedRegistry) -> None:
    roles = loaded(catalog, "curious", max_resident=1)
    roles.switch("curious")
    before = logits(roles)
    with pytest.raises(RegistryError, match="max_resident=1 roles are resident and all are"):
        roles.load("confident")
    assert list(roles.resident) == ["curious"] and roles.active == "curious"
    assert torch.equal(logits(roles), before)


def test_unload_frees_the_role_and_falls_back_to_the_base(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    roles = loaded(catalog, "curious", "confident")
    base_logits = logits(tiny_llama())
    roles.mix({"curious": 1.0, "confident": 1.0})
    roles.unload("curious")
    assert roles.active is None and list(roles.resident) == ["confident"]
    assert torch.equal(logits(roles), base_logits)
    with pytest.raises(NotFound):
        roles.unload("curious")
    roles.load("engaged")  # reuses curious's slot
    roles.switch("engaged")
    close(logits(roles), logits(peft(folders, ["engaged"])))
    roles.close()
    assert torch.equal(logits(roles.model), base_logits)


def test_new_version_under_a_resident_name_replaces_it_in_place(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    roles = RoleSet(base(), registry=catalog)
    assert roles.load("swap@1.0.0", name="role") == "role"
    assert roles.load("swap@1.0.0", name="role") == "role"  # same digest: nothing to do
    roles.switch("role")
    roles.load("swap@1.1.0", name="role")
    assert roles.active == "role" and roles.resident["role"].version == "1.1.0"
    close(logits(roles), logits(peft(folders, ["confident"])))


def test_adapters_of_one_shape_fill_a_slot_in_one_copy(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    """Sites are laid out in the first file's order, so every adapter of that shape (a team's
    stances) is one contiguous copy, also after other shapes widened or extended the arena."""
    roles = loaded(catalog, "curious", "engaged", "patterns", "confident")
    plans = {role: roles._plans[found.digest, False] for role, found in roles.resident.items()}
    runs = {
        role: sum(len(c) for _, _, c in planned.copies or []) for role, planned in plans.items()
    }
    assert runs["curious"] == runs["confident"] == 1
    assert runs["engaged"] > 1  # rank 4 under q_proj's 8: padded, one copy per lora_B
    ref = peft(folders, ["curious", "confident"])
    for name in ("curious", "confident"):
        roles.switch(name)
        ref.set_adapter(name)
        close(logits(roles), logits(ref))


def test_switch_and_mix_visit_no_module_and_switch_allocates_nothing(
    catalog: EmbeddedRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    roles = loaded(catalog, *ROLES)
    buffers = {path: (s.a.data_ptr(), s.b.data_ptr()) for path, s in roles._sites.items()}

    def walked(*args: object, **kwargs: object) -> None:
        raise AssertionError("the module tree was walked")

    for method in ("modules", "named_modules", "children", "named_children", "apply"):
        monkeypatch.setattr(nn.Module, method, walked)
    for name in [*ROLES, None, "curious"]:
        roles.switch(name)
    roles.mix({"curious": 0.5, "engaged": 0.5})
    monkeypatch.undo()
    assert {p: (s.a.data_ptr(), s.b.data_ptr()) for p, s in roles._sites.items()} == buffers


def test_roles_loaded_under_inference_mode_work_outside_it(catalog: EmbeddedRegistry) -> None:
    roles = RoleSet(base(), registry=catalog)
    rows = ["curious", "__base__", "curious", "curious", "__base__"]
    with torch.inference_mode():
        roles.load("curious")
        roles.mix({"curious": 0.5})
        expected = roles(IDS, adapter_names=rows).logits
    roles.load("confident")  # in-place writes into buffers made under inference mode
    roles.mix({"curious": 0.5, "confident": 0.5})
    roles(IDS, adapter_names=rows).logits.sum().backward()  # and autograd through them
    close(logits(roles, adapter_names=rows), expected)


def test_large_cpu_copies_are_exact_into_padded_slots() -> None:
    """Copies above torch's grain size go through numpy (serial); the bytes must not care."""
    buffer = torch.zeros(3, 600, 64, 2)[:, :, :, 0]  # strided, like a padded lora_B slot
    source = torch.randn(600, 60)  # 36,000 elements: above the grain size
    copy_into(buffer[1, :, :60], source)
    assert torch.equal(buffer[1, :, :60], source) and not buffer[1, :, 60:].any()
    copy_into(buffer[2, :, :60], source.to(torch.bfloat16))  # another dtype: torch casts
    assert torch.equal(buffer[2, :, :60], source.to(torch.bfloat16).float())
    zero(buffer[1])
    assert not buffer[1].any() and buffer[2].any()


def test_shape_mismatch_names_the_module_and_both_shapes(catalog: EmbeddedRegistry) -> None:
    roles = RoleSet(base(), registry=catalog)
    with pytest.raises(
        InvalidAdapter,
        match=r"shape mismatch at model\.layers\.0\.self_attn\.q_proj: the model's module maps "
        r"64 -> 64 features, but the adapter has lora_A \[8, 32\] and lora_B \[32, 8\]",
    ):
        roles.load("narrow")
    with pytest.raises(InvalidAdapter, match=r"model\.layers\.4\..* this model does not have"):
        roles.load("deeper")
    assert len(roles) == 0 and not roles._sites  # refused before anything was hooked


def test_another_base_model_is_refused_unless_allowed(catalog: EmbeddedRegistry) -> None:
    roles = RoleSet(base(), registry=catalog)
    with pytest.raises(InvalidAdapter, match="'someone/else-7b', but this model is 'stance-test"):
        roles.load("elsewhere")
    roles.load("elsewhere", allow_base_mismatch=True)
    unnamed = RoleSet(tiny_llama(), registry=catalog)
    with pytest.raises(InvalidAdapter, match="this model is '\\(unnamed\\)'"):
        unnamed.load("curious")


def test_unsupported_variants_and_arguments_are_refused(catalog: EmbeddedRegistry) -> None:
    from registry import RoleSet as public  # imported lazily: only the loader needs torch

    assert public is RoleSet
    roles = RoleSet(base(), registry=catalog)
    with pytest.raises(InvalidAdapter, match=r"DoRA \(use_dora\) are not supported"):
        roles.load("dora")
    with pytest.raises(RegistryError, match="'__base__' names the base model"):
        roles.load("curious", name="__base__")
    with pytest.raises(NotFound, match="not found: run `stance lock` first"):
        RoleSet(base(), registry=catalog, lock="no-such.lock")
    ref = peft({"curious": catalog.fetch("curious")}, ["curious"])
    with pytest.raises(RegistryError, match="not a PEFT-wrapped one"):
        RoleSet(ref, registry=catalog)


def test_yanked_version_loads_with_a_warning(catalog: EmbeddedRegistry) -> None:
    roles = RoleSet(base(), registry=catalog)
    with pytest.warns(UserWarning, match="default/old@1.0.0 is yanked: bad data"):
        roles.load("old@1.0.0")


def test_default_registry_on_each_catalog(
    registry: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    """``registry=None`` is ``Registry()``: the catalog and store named by STANCE_* settings."""
    registry.publish(adapters["curious"], "team/curious@1.2.0")
    with RoleSet(base()) as roles:  # closes the registry it opened
        assert roles.load("team/curious@^1.0") == "team/curious"
        roles.switch("team/curious")
        close(logits(roles), logits(peft(adapters, ["curious"])))


def test_remote_registry_over_http(catalog: EmbeddedRegistry, tmp_path: Path) -> None:
    """Resolution and blobs come over the HTTP API into the client's own verified cache."""
    remote = RemoteRegistry("http://testserver", settings=Settings(home=tmp_path / "client"))
    remote.http.close()
    with TestClient(create_app(catalog.settings)) as http, remote:
        remote.http = http  # type: ignore[assignment]  # starlette builds on httpx2
        roles = RoleSet(base(), registry=remote)
        roles.load("curious@1.0.0")
    roles.switch("curious")
    close(logits(roles), logits(peft({"curious": catalog.fetch("curious")}, ["curious"])))
    assert (tmp_path / "client" / "cache" / "versions" / "default" / "curious").is_dir()
