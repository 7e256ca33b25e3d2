"""Serving fixtures: vLLM's own ``vllm serve`` argument parser, and a project to export from."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from registry.embedded import EmbeddedRegistry
from registry.stores.base import blob_key

runner = CliRunner()


def stance(*args: object, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout if code == 0 else result.stderr


@pytest.fixture(scope="session")
def vllm_serve() -> Callable[[str], argparse.Namespace]:
    """Parse a command line as ``vllm serve`` reads its LoRA flags, with vLLM's own parts.

    vLLM's whole ``make_arg_parser`` builds every engine config, which imports its GPU runtime;
    these are its pieces that hold the LoRA rules: the frontend flags (``--lora-modules`` with
    ``LoRAParserAction``), ``LoRAConfig``'s argparse kwargs (``--max-lora-rank`` choices from
    ``MaxLoRARanks``), declared as ``EngineArgs.add_cli_args`` declares them, then ``LoRAConfig``
    built from what was parsed (its own validation).
    """
    from vllm.config.lora import LoRAConfig
    from vllm.engine.arg_utils import get_kwargs
    from vllm.entrypoints.common.cli_args import FrontendArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    top = FlexibleArgumentParser(prog="vllm")
    serve = top.add_subparsers(dest="subparser", required=True).add_parser("serve")
    serve.add_argument("model_tag", type=str, nargs="?")  # as make_arg_parser declares it
    FrontendArgs.add_cli_args(serve)
    lora = get_kwargs(LoRAConfig)
    serve.add_argument("--enable-lora", action=argparse.BooleanOptionalAction)
    serve.add_argument("--max-loras", **lora["max_loras"])
    serve.add_argument("--max-lora-rank", **lora["max_lora_rank"])

    def parse(command: str) -> argparse.Namespace:
        words = shlex.split(command)
        assert words[:2] == ["vllm", "serve"], command
        args = top.parse_args(words[1:])
        LoRAConfig(max_lora_rank=args.max_lora_rank, max_loras=args.max_loras)
        return args

    return parse


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A service folder (the working directory) over the embedded SQLite registry."""
    folder = tmp_path / "service"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def corrupt_in_store(registry: EmbeddedRegistry, digest: str) -> None:
    """Change the bytes the registry's own (local) store holds for ``digest``."""
    path = registry.store.root / blob_key(digest)  # type: ignore[attr-defined]
    path.chmod(0o644)
    path.write_bytes(b"not the bytes that were published")


def lock_and_sync(project: Path, wants: dict[str, str]) -> None:
    lines = "".join(f'"{ref}" = "{selector}"\n' for ref, selector in wants.items())
    (project / "stance.toml").write_text(f"[adapters]\n{lines}")
    stance("lock")
    stance("sync")
