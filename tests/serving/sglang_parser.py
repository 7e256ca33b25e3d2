"""SGLang's own ``--lora-paths`` action, read from its installed wheel (scripts/install-vllm).

SGLang's full ``ServerArgs`` parser imports its GPU runtime; its ``LoRAPathAction`` lives in a
module that imports only argparse and json, so it is loaded from its file (SGLang's package
``__init__`` is never run). The flags around it are declared as SGLang declares them
(sglang/srt/arg_groups/fields/lora.py, 0.5.23): ints, and ``--lora-paths`` with ``nargs="*"``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
from pathlib import Path


@functools.cache
def _lora_path_action() -> type[argparse.Action]:
    spec = importlib.util.find_spec("sglang")
    assert spec is not None and spec.submodule_search_locations, "scripts/install-vllm installs it"
    path = Path(spec.submodule_search_locations[0], "srt", "arg_groups", "argparse_actions.py")
    module_spec = importlib.util.spec_from_file_location("sglang_argparse_actions", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.LoRAPathAction


def parse_sglang(words: list[str]) -> argparse.Namespace:
    """The arguments after ``python -m sglang.launch_server``, as SGLang reads the LoRA ones."""
    parser = argparse.ArgumentParser(prog="sglang.launch_server", exit_on_error=False)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--max-lora-rank", type=int)
    parser.add_argument("--max-loras-per-batch", type=int, default=8)
    parser.add_argument("--lora-paths", type=str, nargs="*", action=_lora_path_action())
    return parser.parse_args(words)
