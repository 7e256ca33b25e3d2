"""Mixed batches where modules see flattened tokens (OPT's fc1/fc2), and refused batches.

OPT reshapes hidden states to (batch * seq, d) before fc1/fc2, so a hook there sees tokens, not
rows; RoleSet gives each row's tokens that row's role, in forward as in generate. PEFT's own
``adapter_names`` fails on such modules, so the oracle is PEFT with each row's adapter alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from torch import nn

from registry.embedded import EmbeddedRegistry
from registry.errors import NotFound, RegistryError
from registry.loader import RoleSet
from tests.factories import make_adapter
from tests.loader.differential import FAMILIES, logits

OPT = "stance-test/opt"
ROWS = ["fc", "__base__", "attn", "fc"]
IDS = torch.randint(4, 128, (4, 6), generator=torch.Generator().manual_seed(1))


def opt() -> nn.Module:
    torch.manual_seed(0)
    model = FAMILIES["opt"].build().eval()
    model.config.name_or_path = OPT
    return model


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, catalog: EmbeddedRegistry) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("opt")
    found = {
        "fc": make_adapter(
            root / "fc", seed=1, r=4, target_modules=["fc1", "fc2", "q_proj"], model=opt(),
            base_model=OPT, std=0.3,
        ),
        "attn": make_adapter(
            root / "attn", seed=2, r=2, target_modules=["v_proj", "fc2"], model=opt(),
            base_model=OPT, std=0.3,
        ),
        "other": make_adapter(root / "other", seed=3, model=opt(), base_model=OPT,
                              target_modules=["k_proj"]),
    }  # fmt: skip
    for name, folder in found.items():
        catalog.publish(folder, f"{name}@1.0.0")
    return found


def peft(folders: dict[str, Path]) -> PeftModel:
    ref = PeftModel.from_pretrained(opt(), folders["fc"], adapter_name="fc")
    ref.load_adapter(folders["attn"], adapter_name="attn")
    return ref.eval()


def each_alone(ref: PeftModel, run: Any, rows: list[str]) -> list[torch.Tensor]:
    """Row i through PEFT with its own adapter active (or none), one row at a time."""
    out = []
    for i, name in enumerate(rows):
        if name == "__base__":
            with ref.disable_adapter():
                out.append(run(ref, i))
        else:
            ref.set_adapter(name)
            out.append(run(ref, i))
    return out


def test_forward_gives_each_rows_tokens_its_role_on_flattening_modules(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    with RoleSet(opt(), registry=catalog) as roles:
        roles.load("fc")
        roles.load("attn")
        mixed = logits(roles, IDS, adapter_names=ROWS)
    alone = each_alone(peft(folders), lambda ref, i: logits(ref, IDS[i : i + 1])[0], ROWS)
    torch.testing.assert_close(mixed, torch.stack(alone), atol=1e-5, rtol=0)
    assert not torch.allclose(mixed[0], mixed[1], atol=1e-3)  # the roles do change the rows


def test_generate_with_beams_matches_peft_row_by_row(
    catalog: EmbeddedRegistry, folders: dict[str, Path]
) -> None:
    kwargs: dict[str, Any] = {"max_new_tokens": 4, "do_sample": False, "num_beams": 2}
    with RoleSet(opt(), registry=catalog) as roles:
        roles.load("fc")
        roles.load("attn")
        together = roles.generate(IDS, adapter_names=ROWS, **kwargs)

    def generate(ref: PeftModel, i: int) -> torch.Tensor:
        return ref.generate(input_ids=IDS[i : i + 1], **kwargs)[0]

    assert torch.equal(together, torch.stack(each_alone(peft(folders), generate, ROWS)))


class Uneven(nn.Module):
    """Feeds its projection every token but the last: rows no role mapping can split."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.reshape(-1, 8)[:-1])


def test_refused_batches_name_the_problem_and_leave_the_eviction_order(
    catalog: EmbeddedRegistry, folders: dict[str, Path], tmp_path: Path
) -> None:
    roles = RoleSet(opt(), registry=catalog, max_resident=3)
    for name in ("fc", "attn", "other"):
        roles.load(name)
    with pytest.raises(
        RegistryError, match="adapter_names has 2 entries but the batch has 4 rows; give one name"
    ):
        roles(IDS, adapter_names=["fc", "fc"])
    with pytest.raises(NotFound, match="role 'nobody' is not resident"):
        roles(IDS, adapter_names=["fc", "nobody", "fc", "fc"])
    assert list(roles.resident) == ["fc", "attn", "other"]
    roles(IDS, adapter_names=["fc", "fc", "__base__", "attn"])  # a call that ran: both move up
    assert list(roles.resident) == ["other", "fc", "attn"]
    roles.close()

    uneven = make_adapter(tmp_path / "uneven", model=Uneven(), target_modules=["proj"], r=2)
    catalog.publish(uneven, "uneven@1.0.0")
    odd = RoleSet(Uneven(), registry=catalog)
    odd.load("uneven@1.0.0", name="a", allow_base_mismatch=True)
    odd.load("uneven@1.0.0", name="b", allow_base_mismatch=True)
    x = torch.randn(3, 4, 8)
    odd.switch("a")
    before = odd(x)
    with pytest.raises(
        RegistryError,
        match=r"adapter_names has 3 entries but proj sees 11 rows, which do not split into one "
        r"run per entry; give one name per row of the batch",
    ):
        odd(x, adapter_names=["b", "__base__", "b"])  # refused inside the forward
    assert list(odd.resident) == ["b", "a"] and odd.active == "a"  # b did not move up
    assert torch.equal(odd(x), before)
