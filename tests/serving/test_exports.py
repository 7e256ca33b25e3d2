"""``stance export``: every form is accepted by the engine's own parser (vLLM's, SGLang's)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest

from registry.errors import InvalidAdapter
from registry.manifest import digest_file
from registry.serving.exports import VLLM_MAX_LORA_RANKS, largest_rank, vllm_max_lora_rank
from registry.transfer.lockfile import read_lock
from tests.factories import TINY_BASE, make_adapter
from tests.serving.conftest import lock_and_sync, stance
from tests.serving.sglang_parser import parse_sglang

Parse = Callable[[str], argparse.Namespace]


def test_the_ranks_we_round_to_are_vllms_own() -> None:
    from vllm.config.lora import MaxLoRARanks

    assert get_args(MaxLoRARanks) == VLLM_MAX_LORA_RANKS
    assert largest_rank({"r": 4, "rank_pattern": {"v_proj": 16}}) == 16
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 12, 64, 300)] == [1, 8, 8, 16, 64, 320]
    with pytest.raises(InvalidAdapter, match="above the largest --max-lora-rank"):
        vllm_max_lora_rank(513)


def test_the_oracle_refuses_what_the_old_export_printed(vllm_serve: Parse) -> None:
    """vLLM's parser is strict enough to catch the bugs of issue 18."""
    with pytest.raises(SystemExit):
        vllm_serve(f"vllm serve {TINY_BASE} --enable-lora --max-lora-rank 12")
    with pytest.raises(SystemExit):  # a space splits name=path into words vLLM cannot read
        vllm_serve(f"vllm serve {TINY_BASE} --enable-lora --lora-modules a=/x/a b /y")


@pytest.mark.parametrize(
    ("rank", "pattern", "expected"),
    [(2, None, 8), (4, None, 8), (8, None, 8), (12, None, 16), (64, None, 64), (4, 16, 16)],
)
def test_vllm_accepts_the_export_for_every_rank(
    project: Path, vllm_serve: Parse, rank: int, pattern: int | None, expected: int
) -> None:
    extra: dict[str, Any] = {"rank_pattern": {"v_proj": pattern}} if pattern else {}
    make_adapter(project / "out", r=rank, lora_alpha=2 * rank, **extra)
    stance("publish", project / "out", "role@1.0.0")
    lock_and_sync(project, {"role": "1.0.0"})

    args = vllm_serve(stance("export", "--format", "vllm"))
    assert (args.model_tag, args.enable_lora, args.max_lora_rank) == (TINY_BASE, True, expected)
    [module] = args.lora_modules
    assert (module.name, module.base_model_name) == ("role", TINY_BASE)
    config = json.loads((Path(module.path) / "adapter_config.json").read_text())
    assert largest_rank(config) == (pattern or rank) <= args.max_lora_rank


@pytest.fixture
def two_namespaces(
    project: Path, adapters: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """One adapter name in two namespaces, under a home whose path holds a space and a '='."""
    odd = tmp_path / "my home=1"
    monkeypatch.setenv("STANCE_HOME", str(odd))
    stance("publish", adapters["engaged"], "engaged-difficulty@1.0.0")
    stance("publish", adapters["curious"], "team-a/engaged-difficulty@2.0.0")
    lock_and_sync(project, {"engaged-difficulty": "1.0.0", "team-a/engaged-difficulty": "^2"})
    return odd / "cache" / "versions"


def test_names_stay_distinct_and_odd_paths_survive(two_namespaces: Path, vllm_serve: Parse) -> None:
    folders = {
        "engaged-difficulty": two_namespaces / "default" / "engaged-difficulty" / "1.0.0",
        "team-a/engaged-difficulty": two_namespaces / "team-a" / "engaged-difficulty" / "2.0.0",
    }
    args = vllm_serve(stance("export", "--format", "vllm"))
    assert {m.name: m.path for m in args.lora_modules} == {k: str(v) for k, v in folders.items()}
    assert (args.max_loras, args.max_lora_rank) == (2, 8)
    for module in args.lora_modules:
        assert (Path(module.path) / "adapter_model.safetensors").is_file()

    words = shlex.split(stance("export", "--format", "sglang"))
    sglang = parse_sglang(words[3:])
    assert sglang.model_path == TINY_BASE and sglang.max_lora_rank == 8
    assert {p["lora_name"]: p["lora_path"] for p in sglang.lora_paths} == {
        k: str(v) for k, v in folders.items()
    }

    lorax = [json.loads(line) for line in stance("export", "--format", "lorax").splitlines()]
    assert {x["name"]: x["adapter_id"] for x in lorax} == {k: str(v) for k, v in folders.items()}
    peft = stance("export", "--format", "peft")
    compile(peft, "<export>", "exec")
    assert "adapter_name='engaged-difficulty'" in peft
    assert "adapter_name='team-a/engaged-difficulty'" in peft


def test_one_engine_serves_one_base_model(
    project: Path, adapters: dict[str, Path], vllm_serve: Parse
) -> None:
    make_adapter(project / "other", base_model="stance-test/other-model")
    make_adapter(project / "unknown", base_model=None)
    stance("publish", adapters["curious"], "curious@1.0.0")
    stance("publish", project / "other", "other@1.0.0")
    stance("publish", project / "unknown", "unknown@1.0.0")

    lock_and_sync(project, {"curious": "1.0.0", "other": "1.0.0"})
    mixed = stance("export", "--format", "vllm", code=1)
    assert "the lock mixes base models (stance-test/other-model: default/other@1.0.0;" in mixed
    assert "an engine serves one" in mixed and mixed.startswith("error: ")

    lock_and_sync(project, {"unknown": "1.0.0"})
    for form in ("vllm", "sglang", "lorax", "peft"):
        missing = stance("export", "--format", form, code=1)
        assert "no base model recorded for default/unknown@1.0.0: give it with --base-model" in (
            missing
        )
    args = vllm_serve(stance("export", "--format", "vllm", "--base-model", "my/base"))
    assert args.model_tag == "my/base" and args.lora_modules[0].base_model_name == "my/base"

    lock_and_sync(project, {"curious": "1.0.0"})
    wrong = stance("export", "--format", "vllm", "--base-model", "my/base", code=1)
    assert f"trained on {TINY_BASE!r}, not 'my/base'" in wrong


def test_copy_gives_real_files_a_container_can_mount(
    project: Path, adapters: dict[str, Path], tmp_path: Path, vllm_serve: Parse
) -> None:
    stance("publish", adapters["curious"], "team-a/curious@1.0.0")
    lock_and_sync(project, {"team-a/curious": "1.0.0"})
    entry = read_lock(project / "stance.lock").adapters[0]
    out = tmp_path / "for the container=1"

    command = stance("export", "--format", "vllm", "--copy", out, "--path-prefix", "/adapters")
    [module] = vllm_serve(command).lora_modules
    assert module.path == "/adapters/team-a/curious/1.0.0"
    copied = out / "team-a" / "curious" / "1.0.0"
    for file in entry.files:
        assert not (copied / file.path).is_symlink()
        assert digest_file(copied / file.path)[0] == file.digest
    assert stance("export", "--format", "vllm", "--copy", out, "--path-prefix", "/adapters") == (
        command
    )  # an identical copy is kept as it is

    (copied / "README.md").unlink()
    refused = stance("export", "--format", "vllm", "--copy", out, code=1)
    assert f"{copied} exists with other content" in refused


def test_a_prefix_without_copy_names_the_mounted_cache(
    project: Path, adapters: dict[str, Path], tmp_path: Path, vllm_serve: Parse
) -> None:
    """The cache's version folders link into its blobs/: mounted whole, they still resolve."""
    stance("publish", adapters["curious"], "curious@1.0.0")
    lock_and_sync(project, {"curious": "1.0.0"})
    cache = Path(os.environ["STANCE_HOME"]) / "cache"
    [module] = vllm_serve(
        stance("export", "--format", "vllm", "--path-prefix", "/stance-cache")
    ).lora_modules
    assert module.path == "/stance-cache/versions/default/curious/1.0.0"

    mount = tmp_path / "mounted"  # the same tree somewhere else, links and all
    shutil.copytree(cache, mount, symlinks=True)
    inside = mount / Path(module.path).relative_to("/stance-cache")
    assert (inside / "adapter_model.safetensors").is_symlink()
    assert (inside / "adapter_model.safetensors").resolve().is_relative_to(mount / "blobs")
