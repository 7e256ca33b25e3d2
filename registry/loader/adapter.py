"""Read a cached adapter version and check it against the model before a single byte moves.

The files come from the verified client cache (digest-checked, validated at publish), so the
safetensors header is parsed here in one pass instead of through ``registry.lora.weights``, whose
full layout checks cost more than copying a rank-8 adapter. What can still go wrong is the
pairing with *this* model: a base model id, a module the model lacks, or a shape. Each is a
domain error naming the module and both shapes, never a torch traceback.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from registry.errors import InvalidAdapter
from registry.lora.format import CONFIG, WEIGHTS, read_config, scaling

_DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}
_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<path>.+)\.(?P<kind>lora_A|lora_B)\.weight$")
_EMBEDDING = re.compile(r"^(?:base_model\.model\.)?(?P<path>.+)\.lora_embedding_[AB]$")
_HALF = (torch.float16, torch.bfloat16)
# LoraConfig options that change the forward pass beyond ``B @ A``: refused, not approximated.
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora)",
    "lora_bias": "a LoRA bias (lora_bias)",
    "modules_to_save": "modules_to_save (full copies of base modules)",
    "trainable_token_indices": "trainable tokens (trainable_token_indices)",
    "layer_replication": "layer_replication",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "target_parameters": "target_parameters",
    "use_qalora": "QALoRA (use_qalora)",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA",
    "arrow_config": "Arrow routing",
    "kasa_config": "KaSA",
}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes lie in the weights file."""

    start: int
    end: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    def view(self, data: torch.Tensor) -> torch.Tensor:
        """The tensor as a view of the file's bytes in ``data`` (a copy only when misaligned)."""
        raw = data[self.start : self.end]
        if self.start % self.dtype.itemsize:
            raw = raw.clone()
        return raw.view(self.dtype).view(self.shape)


@dataclass(frozen=True)
class ModulePlan:
    """One adapted module of the model and where its ``lora_A``/``lora_B`` lie."""

    path: str
    module: nn.Module
    d_in: int
    d_out: int
    a: TensorRef
    b: TensorRef
    scaling: float

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass(frozen=True)
class Carried:
    """A base-model tensor saved beside the LoRA weights (PEFT's ``save_embedding_layers``)."""

    name: str
    target: str
    own: torch.Tensor
    ref: TensorRef


@dataclass(frozen=True)
class AdapterPlan:
    """An adapter version checked against the model: everything ``RoleSet`` needs to copy it."""

    weights: Path
    size: int
    modules: list[ModulePlan]


def model_id(model: nn.Module) -> str:
    """The base model id a transformers model was loaded as (empty when built from a config)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "")


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a Linear or a transformers ``Conv1D`` (GPT-2; weight is (in, out))."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    nx, nf = getattr(module, "nx", None), getattr(module, "nf", None)
    if isinstance(nx, int) and isinstance(nf, int):
        return nx, nf
    return None


def _check_config(config: dict[str, Any], label: str) -> None:
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise InvalidAdapter(f"{label}: adapters with {what} are not supported by RoleSet")
    if config.get("bias", "none") != "none":
        raise InvalidAdapter(
            f"{label}: bias={config['bias']!r} trains base-model biases; RoleSet supports "
            "bias='none' only"
        )


def _check_base(config: dict[str, Any], model: str, label: str) -> None:
    base = config.get("base_model_name_or_path")
    if base and base.rstrip("/") != model.rstrip("/"):
        raise InvalidAdapter(
            f"{label} was trained on base model {base!r}, but this model is "
            f"{model or '(unnamed)'!r}; set model.config.name_or_path to the base id, or pass "
            "allow_base_mismatch=True (shapes are still checked)"
        )


def _header(path: Path) -> tuple[dict[str, Any], int, int]:
    """The safetensors header, where the data starts, and the file size."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
            size = fh.seek(0, 2)
    except (OSError, struct.error, ValueError) as exc:
        raise InvalidAdapter(f"{path.name}: unreadable safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise InvalidAdapter(f"{path.name}: the header is not a JSON object")
    header.pop("__metadata__", None)
    return header, 8 + length, size


def _tensor(
    path: Path, name: str, raw: Any, start: int, size: int, *, matrix: bool = True
) -> TensorRef:
    try:
        first, last = raw["data_offsets"]
        begin, end = start + int(first), start + int(last)
        ref = TensorRef(begin, end, _DTYPES[raw["dtype"]], tuple(map(int, raw["shape"])))
    except (KeyError, TypeError, ValueError):
        raise InvalidAdapter(f"{path.name}: tensor {name} has a malformed header entry") from None
    span = math.prod(ref.shape) * ref.dtype.itemsize
    if (matrix and len(ref.shape) != 2) or not start <= begin <= end <= size or end - begin != span:
        what = "a matrix" if matrix else "a tensor"
        raise InvalidAdapter(f"{path.name}: tensor {name} is not {what} inside the file")
    return ref


def _own_tensor(name: str, modules: Mapping[str, nn.Module]) -> tuple[str, torch.Tensor] | None:
    """The model's parameter that a saved base-layer tensor copies (``lm_head.base_layer.weight``
    is ``lm_head.weight`` under PEFT's wrapper), or None when the model has no such tensor."""
    owner, _, attr = name.removeprefix(_PREFIX).rpartition(".")
    owner = owner.removesuffix(".base_layer")
    tensor = getattr(modules.get(owner), attr, None) if owner else None
    return (f"{owner}.{attr}", tensor) if isinstance(tensor, torch.Tensor) else None


def _refuse_embedding_lora(header: Mapping[str, Any], label: str) -> None:
    for name in header:
        match = _EMBEDDING.match(name)
        if match is not None:
            raise InvalidAdapter(
                f"{label}: LoRA on the embedding {match['path']} (lora_embedding_A/B) is not "
                "supported; RoleSet adapts Linear and Conv1D modules only"
            )


def _pairs(
    path: Path, modules: Mapping[str, nn.Module], label: str
) -> tuple[dict[str, dict[str, TensorRef]], list[Carried], int]:
    """``{module path: {"lora_A": ref, "lora_B": ref}}``, the base-model tensors saved beside
    them, and the file size."""
    header, start, size = _header(path)
    _refuse_embedding_lora(header, label)
    pairs: dict[str, dict[str, TensorRef]] = {}
    carried: list[Carried] = []
    for name, raw in header.items():
        match = _KEY.match(name)
        if match is not None:
            ref = _tensor(path, name, raw, start, size)
            pairs.setdefault(match["path"], {})[match["kind"]] = ref
            continue
        own = _own_tensor(name, modules)
        if own is None:
            raise InvalidAdapter(
                f"{label}: {WEIGHTS} holds {name}, which is neither a lora_A/lora_B weight nor "
                "a tensor of this model; RoleSet loads plain LoRA on Linear and Conv1D modules"
            )
        ref = _tensor(path, name, raw, start, size, matrix=False)
        carried.append(Carried(name, own[0], own[1], ref))
    if not pairs:
        raise InvalidAdapter(f"{label}: {WEIGHTS} holds no LoRA weights")
    return pairs, carried, size


def _check_carried(path: Path, carried: list[Carried], label: str) -> None:
    """PEFT saves a targeted lm_head's or embedding's own weights beside the LoRA (its default,
    ``save_embedding_layers="auto"``) and loads them into the model, under every adapter: loaded
    here when that would change nothing (equal in the model's dtype), refused otherwise."""
    if not carried:
        return
    with path.open("rb") as fh:
        for each in carried:
            ref, own = each.ref, each.own.detach()
            if ref.shape != tuple(own.shape):
                raise InvalidAdapter(
                    f"{label}: {WEIGHTS} carries {each.name} of shape {list(ref.shape)}, but this "
                    f"model's {each.target} is {list(own.shape)} (resized embeddings?); RoleSet "
                    "does not replace base-model weights"
                )
            fh.seek(ref.start)
            raw = bytearray(fh.read(ref.end - ref.start))
            saved = torch.frombuffer(raw, dtype=torch.uint8).view(ref.dtype).view(ref.shape)
            if not torch.equal(saved.to(own.device, own.dtype), own):
                diff = (saved.double() - own.double().cpu()).abs().max().item()
                dtypes = "" if ref.dtype == own.dtype else (
                    f", {str(ref.dtype)[6:]} in the file, {str(own.dtype)[6:]} in the model"
                )  # fmt: skip
                raise InvalidAdapter(
                    f"{label}: {WEIGHTS} carries {each.name} (PEFT's save_embedding_layers), which "
                    f"differs from this model's {each.target} (max |diff| {diff:.3g}{dtypes}); "
                    "RoleSet does not replace base-model weights: load it onto the model it was "
                    "saved from"
                )


def _module_plan(
    path: str,
    refs: dict[str, TensorRef],
    modules: Mapping[str, nn.Module],
    config: dict[str, Any],
    label: str,
) -> ModulePlan:
    if len(refs) != 2:
        raise InvalidAdapter(f"{label}: module {path} lacks a lora_A or lora_B weight")
    module = modules.get(path)
    if module is None:
        raise InvalidAdapter(f"{label}: targets module {path}, which this model does not have")
    dims = linear_dims(module)
    if dims is None:
        raise InvalidAdapter(
            f"{label}: targets {path}, a {type(module).__name__}; RoleSet adapts Linear and "
            "Conv1D modules only"
        )
    a, b = refs["lora_A"], refs["lora_B"]
    if (a.shape[1], b.shape[0]) != dims or a.shape[0] != b.shape[1]:
        raise InvalidAdapter(
            f"{label}: shape mismatch at {path}: the model's module maps {dims[0]} -> {dims[1]} "
            f"features, but the adapter has lora_A {list(a.shape)} and lora_B {list(b.shape)} "
            f"({a.shape[1]} -> {b.shape[0]})"
        )
    # rank_pattern / alpha_pattern / rsLoRA: the same rule the registry records at publish.
    return ModulePlan(path, module, dims[0], dims[1], a, b, scaling(config, path, a.shape[0]))


def plan_adapter(
    folder: Path,
    modules: Mapping[str, nn.Module],
    *,
    label: str,
    model: str,
    allow_base_mismatch: bool,
) -> AdapterPlan:
    """Check a fetched version against the model's modules; raise InvalidAdapter on a mismatch."""
    config = read_config(folder / CONFIG)
    _check_config(config, label)
    if not allow_base_mismatch:
        _check_base(config, model, label)
    pairs, carried, size = _pairs(folder / WEIGHTS, modules, label)
    plans = [_module_plan(path, refs, modules, config, label) for path, refs in pairs.items()]
    _check_carried(folder / WEIGHTS, carried, label)
    return AdapterPlan(folder / WEIGHTS, size, plans)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype a model computes in (its ``dtype``, else its first float parameter)."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def adapter_dtype(model: nn.Module) -> torch.dtype:
    """PEFT's default (``autocast_adapter_dtype=True``): float32 adapters on a float16 or
    bfloat16 model, the model's own dtype otherwise. In half precision the low-rank product of
    a small rank with a large alpha loses about as much as the adapter adds (issue 21)."""
    dtype = model_dtype(model)
    return torch.float32 if dtype in _HALF else dtype


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
