"""Fuzz targets for the safetensors reader and the config checker, judged by outside oracles.

The reader is judged by ``safetensors`` itself: files saved by ``safetensors.torch.save`` are
mutated (header JSON, raw literals, lengths, offsets, dtypes, shapes, duplicate keys, bytes),
then read by both. Whenever we accept, safetensors must load the file and give the same
tensors; whenever safetensors refuses, we refuse; we never raise anything but InvalidAdapter.
The config checker is judged by Python's own ``json`` (what we accept parses to the same
object) and must answer every mutated config with a result or InvalidAdapter, quickly.

``tests/lora/test_fuzz.py`` runs these with a small budget; ``benchmarks/fuzz_reader.py``
runs them for longer.
"""

from __future__ import annotations

import json
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from registry.errors import InvalidAdapter
from registry.lora.config import parse_config
from registry.lora.format import scaling
from registry.lora.inspection import inspect_dir
from registry.lora.weights import open_weights

# ---------------------------------------------------------------- JSON with raw literals


@dataclass(frozen=True)
class Raw:
    """A JSON token written verbatim: ``-0``, ``NaN``, ``1e400``, a lone surrogate escape..."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """An object written from a list of pairs, so a key can appear twice."""

    items: tuple[tuple[str, Any], ...]


def encode(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return encode(Pairs(tuple(value.items())))
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value)


RAW_LITERALS = [
    "-0",
    "-0.0",
    "0.0",
    "1e2",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "9" * 25,
    "1" + "0" * 4400,
    '"\\ud800"',
    '"\\udc00x"',
    '"\\ud83d\\ude00"',
    '"a\\u0000b"',
    "[" * 70 + "]" * 70,
    "{}",
    "[]",
    '""',
    "null",
    "true",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(RAW_LITERALS).map(Raw),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=6), inner, max_size=3),
    ),
    max_leaves=6,
)

# ---------------------------------------------------------------- safetensors files

NAMES = [
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
    "base_model.model.score.weight",
    "t",
    "",
    "__metadata__",
]
DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I32": torch.int32,
    "U8": torch.uint8,
}


@st.composite
def tensor_sets(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    names = draw(st.lists(st.sampled_from(NAMES[:5]), min_size=1, max_size=4, unique=True))
    out = {}
    for name in names:
        shape = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
        dtype = DTYPES[draw(st.sampled_from(list(DTYPES)))]
        values = draw(st.lists(st.floats(-1e4, 1e4, width=16), min_size=1, max_size=1))[0]
        base = torch.arange(int(np.prod(shape)) if shape else 1, dtype=torch.float64) + values
        out[name] = base.reshape(shape).to(dtype)
    return out


def split(data: bytes) -> tuple[int, bytes, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return n, data[8 : 8 + n], data[8 + n :]


def join(header: bytes, body: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + body


@st.composite
def header_edits(draw: st.DrawFn, data: bytes) -> bytes:
    """Rewrite the header's JSON: a field, an entry, a duplicate key, a raw literal."""
    _, header, body = split(data)
    tree = json.loads(header)
    if not isinstance(tree, dict) or not tree:
        return data
    pairs: list[tuple[str, Any]] = list(tree.items())
    kind = draw(
        st.sampled_from(["field", "drop", "extra", "duplicate", "metadata", "rename", "top"])
    )
    index = draw(st.integers(0, len(pairs) - 1))
    name, entry = pairs[index]
    if kind == "field" and isinstance(entry, dict):
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        options = [json_values]
        if field == "shape":
            options.append(st.lists(st.one_of(st.integers(0, 2**64), json_values), max_size=3))
        elif field == "data_offsets":
            options.append(st.lists(st.integers(-2, 2**64), min_size=2, max_size=2))
            options.append(
                st.tuples(st.sampled_from(RAW_LITERALS[:4]), st.integers(0, 64)).map(
                    lambda t: [Raw(t[0]), t[1]]
                )
            )
        else:
            options.append(st.sampled_from(["F8_E4M3", "f32", "BOOL", "I64", "C64", "F4"]))
        entry = {**entry, field: draw(st.one_of(*options))}
        pairs[index] = (name, entry)
    elif kind == "drop" and isinstance(entry, dict) and entry:
        field = draw(st.sampled_from(sorted(entry)))
        pairs[index] = (name, {k: v for k, v in entry.items() if k != field})
    elif kind == "extra" and isinstance(entry, dict):
        pairs[index] = (name, {**entry, draw(st.text(max_size=4)): draw(json_values)})
    elif kind == "duplicate":
        other = draw(st.one_of(st.just(entry), json_values))
        pairs.insert(draw(st.integers(0, len(pairs))), (name, other))
    elif kind == "metadata":
        pairs.insert(0, ("__metadata__", draw(json_values)))
    elif kind == "rename":
        pairs[index] = (draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=6))), entry)
    else:
        return join(encode(draw(json_values)).encode("utf-8", "surrogatepass"), body)
    text = encode(Pairs(tuple(pairs)))
    return join(text.encode("utf-8", "surrogatepass"), body)


@st.composite
def byte_edits(draw: st.DrawFn, data: bytes) -> bytes:
    """Damage the bytes: the length prefix, the header text, the data section."""
    n, header, body = split(data)
    kind = draw(st.sampled_from(["length", "flip", "truncate", "append", "pad", "lead"]))
    if kind == "length":
        length = draw(
            st.one_of(st.integers(0, n + 16), st.integers(0, 2**64 - 1), st.just(n + len(body)))
        )
        return join(header, body, length)
    if kind == "flip":
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=8))
    pad = draw(st.sampled_from([b" ", b"\n", b"\t", b"\x00", b"\xef\xbb\xbf", b"\r"]))
    header = header + pad if kind == "pad" else pad + header
    return join(header, body)


@st.composite
def safetensors_bytes(draw: st.DrawFn) -> bytes:
    metadata = draw(
        st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))
    )
    data = st_save(draw(tensor_sets()), metadata=metadata)
    for _ in range(draw(st.integers(0, 2))):
        data = draw(st.one_of(header_edits(data), byte_edits(data)))
        if len(data) < 8 or split(data)[0] > len(data) or split(data)[0] > 1 << 20:
            break
        try:
            json.loads(split(data)[1])
        except ValueError:
            break  # further JSON edits need a JSON header
    return data


# ---------------------------------------------------------------- the reader's oracle


class Disagreement(AssertionError):
    """Our reader and safetensors disagree, or our reader raised something else."""


def _ours(path: Path) -> dict[str, np.ndarray] | InvalidAdapter:
    try:
        with open_weights(path, max_bytes=1 << 30) as weights:
            return {name: weights.read(name) for name in weights.tensors}
    except InvalidAdapter as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
        raise Disagreement(f"reader raised {type(exc).__name__}: {exc}") from exc


def _theirs(data: bytes) -> dict[str, torch.Tensor] | Exception:
    try:
        return st_load(data)
    except Exception as exc:  # noqa: BLE001 - any refusal by the oracle counts
        return exc


def check_reader(data: bytes) -> str:
    """Judge one file; returns "both", "neither" or "we_refuse" (accepted by safetensors)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "adapter_model.safetensors"
        path.write_bytes(data)
        ours = _ours(path)
    theirs = _theirs(data)
    if isinstance(ours, InvalidAdapter):
        if "\n" in str(ours):
            raise Disagreement(f"multi-line message: {ours!r}")
        return "neither" if isinstance(theirs, Exception) else "we_refuse"
    if isinstance(theirs, Exception):
        raise Disagreement(f"we accept a file safetensors refuses: {theirs}")
    if ours.keys() != theirs.keys():
        raise Disagreement(f"tensor names differ: {sorted(ours)} vs {sorted(theirs)}")
    for name, array in ours.items():
        expected = theirs[name].to(torch.float64).numpy()
        if array.shape != expected.shape or not np.array_equal(array, expected):
            raise Disagreement(f"tensor {name} differs: {array!r} vs {expected!r}")
    return "both"


# ---------------------------------------------------------------- the config checker

VALID_CONFIG: dict[str, Any] = {
    "peft_type": "LORA",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "rank_pattern": {"v_proj": 4},
    "alpha_pattern": {"q_proj": 32},
    "modules_to_save": None,
    "revision": None,
    "base_model_name_or_path": "org/model",
    "use_rslora": False,
    "use_dora": False,
    "layers_to_transform": None,
    "bias": "none",
    "lora_dropout": 0.0,
}
PATTERN_KEYS = [
    "(",
    "(x+x+)+y",
    r"([\w.]+)+#",
    "a{,3}",
    "[[:alpha:]]",
    r"(a)\1",
    "(?=q)",
    r"\bq_proj",
    "^model",
    "(?i)Q",
    "q_proj|",
    "\u00e9",
]


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    config: dict[str, Any] = dict(VALID_CONFIG)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*VALID_CONFIG, "unknown", "layers_pattern"]))
        if key in ("rank_pattern", "alpha_pattern") and draw(st.booleans()):
            keys = st.one_of(st.sampled_from(PATTERN_KEYS), st.text(max_size=6))
            config[key] = draw(st.dictionaries(keys, json_values, max_size=3))
        else:
            config[key] = draw(json_values)
    text = encode(config)
    if draw(st.booleans()):  # a key twice
        text = text[:-1] + f',"{draw(st.sampled_from(list(config)))}":1}}'
    return text


PATHS = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "x" * 30, "é.q"]


def check_config(text: str) -> str:
    """Judge one config text; returns "accepted" or "refused"."""
    data = text.encode("utf-8", "surrogatepass")
    try:
        config = parse_config(data)
        for path in PATHS:
            value = scaling(config, path, 4)
            assert isinstance(value, float) and 0 < value < float("inf"), value
    except InvalidAdapter as exc:
        if "\n" in str(exc):
            raise Disagreement(f"multi-line message: {exc!r}") from exc
        return "refused"
    except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
        raise Disagreement(f"config checker raised {type(exc).__name__}: {exc}") from exc
    if json.loads(data) != dict(config):
        raise Disagreement("an accepted config parses differently in Python's json")
    return "accepted"


# ---------------------------------------------------------------- the whole inspector

MODULE = "base_model.model.model.layers.{}.self_attn.{}"
KINDS = [
    "lora_A.weight",
    "lora_B.weight",
    "lora_B.bias",
    "lora_magnitude_vector",
    "lora_embedding_A",
]


@st.composite
def adapter_tensors(draw: st.DrawFn, r: int) -> dict[str, torch.Tensor]:
    """Plausible LoRA tensors: pairs at rank ``r``, sometimes a bias, a magnitude, an extra."""
    out: dict[str, torch.Tensor] = {}
    for layer in range(draw(st.integers(1, 2))):
        for proj in draw(st.lists(st.sampled_from(["q_proj", "v_proj"]), min_size=1, unique=True)):
            path = MODULE.format(layer, proj)
            d_in, d_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
            dtype = DTYPES[draw(st.sampled_from(["F16", "BF16", "F32", "F64"]))]
            shapes = {
                "lora_A.weight": (r, d_in),
                "lora_B.weight": (d_out, r),
                "lora_B.bias": (d_out,),
                "lora_magnitude_vector": (d_out,),
                "lora_embedding_A": (r, d_in),
            }
            kinds = ["lora_A.weight", "lora_B.weight"] if draw(st.integers(0, 9)) else []
            kinds += draw(st.lists(st.sampled_from(KINDS), max_size=2, unique=True))
            for kind in dict.fromkeys(kinds):
                shape = shapes[kind] if draw(st.integers(0, 9)) else (draw(st.integers(1, 3)),)
                values = torch.arange(int(np.prod(shape)), dtype=torch.float64) / 7
                out[f"{path}.{kind}"] = values.reshape(shape).to(dtype)
    if draw(st.booleans()):
        out["base_model.model.score.weight"] = torch.ones(2, 2)
    return out


@st.composite
def adapter_folders(draw: st.DrawFn) -> tuple[str, bytes]:
    r = draw(st.integers(1, 3))
    data = st_save(draw(adapter_tensors(r)))
    if not draw(st.integers(0, 2)):
        data = draw(st.one_of(header_edits(data), byte_edits(data)))
    config = dict(VALID_CONFIG)
    config["r"] = r
    config["rank_pattern"] = draw(st.sampled_from([{}, {"v_proj": r}, {"(x+x+)+y": 1}]))
    config["modules_to_save"] = draw(st.sampled_from([None, ["score"], ["score"], ["head"]]))
    text = encode(config) if draw(st.integers(0, 4)) else draw(config_texts())
    return text, data


def check_inspect(folder_files: tuple[str, bytes]) -> str:
    """Judge one folder; returns "accepted" or "refused"."""
    text, data = folder_files
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "adapter_config.json").write_bytes(text.encode("utf-8", "surrogatepass"))
        (folder / "adapter_model.safetensors").write_bytes(data)
        try:
            result = inspect_dir(folder)
        except InvalidAdapter as exc:
            if "\n" in str(exc):
                raise Disagreement(f"multi-line message: {exc!r}") from exc
            return "refused"
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
            raise Disagreement(f"inspect_dir raised {type(exc).__name__}: {exc}") from exc
    theirs = _theirs(data)
    if isinstance(theirs, Exception):
        raise Disagreement(f"we publish weights safetensors refuses: {theirs}")
    if result.info.parameters != sum(t.numel() for t in theirs.values()):
        raise Disagreement("parameter count differs from the tensors safetensors reads")
    return "accepted"
