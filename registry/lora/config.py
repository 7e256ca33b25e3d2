"""``adapter_config.json``: every value PEFT reads, checked by type and range before any use.

A config is the uploader's JSON: ``rank_pattern`` 4.5, ``modules_to_save`` 5, ``revision`` 5 or
``lora_alpha`` 10**400 each crashed something later (pydantic, a database insert, a float
conversion). Here each known key has a rule; unknown keys (newer PEFT versions) pass through
as strict JSON. The result is an ``AdapterConfig``, a dict that also carries its compiled
pattern tables, so matching costs one compile per config, not one per module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from registry.errors import InvalidAdapter
from registry.lora import strict_json
from registry.lora.patterns import MAX_KEYS, PatternTable, SavedModules

# The files a version holds; here, not in format.py, so their names cost no numpy import.
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
CARD = "README.md"
MAX_RANK = 1 << 16
MAX_ALPHA = float(1 << 20)
MAX_NAME_CHARS = 256
MAX_LIST = 10_000
_INDEX_LIMIT = 1 << 31


class AdapterConfig(dict[str, Any]):
    """A checked config; ``rank_table``/``alpha_table`` are its patterns, compiled once."""

    rank_table: PatternTable
    alpha_table: PatternTable
    saved: SavedModules


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(key: str, what: str, value: object) -> InvalidAdapter:
    return InvalidAdapter(f"{CONFIG}: {key} must be {what}, got {_show(value)}")


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _text(limit: int) -> Callable[[object], bool]:
    # Printable: no control characters (NUL breaks PostgreSQL text; newlines break logs).
    return lambda v: isinstance(v, str) and 0 < len(v) <= limit and v.isprintable()


def _names(limit: int) -> Callable[[object], bool]:
    name = _text(MAX_NAME_CHARS)
    return lambda v: isinstance(v, list) and len(v) <= limit and all(name(x) for x in v)


def _ints(v: object) -> bool:
    return (
        isinstance(v, list)
        and len(v) <= MAX_LIST
        and all(_is_int(x) and 0 <= x < _INDEX_LIMIT for x in v)
    )


def _index(v: object) -> bool:
    return _is_int(v) and 0 <= v < _INDEX_LIMIT  # type: ignore[operator]


_NAME = _text(MAX_NAME_CHARS)
_NAME_LIST = _names(MAX_KEYS)
# key -> (what it must be, test); None is accepted for every key (PEFT's "not set").
_RULES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "task_type": ("a short string", _text(64)),
    "peft_version": ("a short string", _text(64)),
    "base_model_name_or_path": ("a printable string of at most 1024 chars", _text(1024)),
    "revision": ("a printable string of at most 256 chars", _text(256)),
    "megatron_core": ("a string", _text(MAX_NAME_CHARS)),
    "target_modules": (
        "a pattern string or a list of module names",
        lambda v: _text(4096)(v) or _NAME_LIST(v),
    ),
    "exclude_modules": (
        "a pattern string or a list of module names",
        lambda v: _text(4096)(v) or _NAME_LIST(v),
    ),
    # Matched in one linear scan per tensor (patterns.SavedModules): a longer list costs little.
    "modules_to_save": (f"a list of at most {MAX_LIST} module names", _names(MAX_LIST)),
    "target_parameters": ("a list of parameter names", _NAME_LIST),
    "layers_pattern": ("a string or a list of strings", lambda v: _NAME(v) or _NAME_LIST(v)),
    "layers_to_transform": ("a layer index or a list of them", lambda v: _index(v) or _ints(v)),
    "alora_invocation_tokens": ("a list of token ids", _ints),
    "trainable_token_indices": (
        "a list of token ids or a map of module names to them",
        lambda v: (
            _ints(v)
            or (
                isinstance(v, dict)
                and len(v) <= MAX_KEYS
                and all(_NAME(k) and _ints(x) for k, x in v.items())
            )
        ),
    ),
    "layer_replication": (
        "a list of [start, end] layer pairs",
        lambda v: (
            isinstance(v, list)
            and len(v) <= MAX_LIST
            and all(isinstance(p, list) and len(p) == 2 and all(map(_index, p)) for p in v)
        ),
    ),
    "lora_dropout": ("a number from 0 to 1", lambda v: _is_number(v) and 0 <= v <= 1),  # type: ignore[operator]
    "bias": ("'none', 'all' or 'lora_only'", lambda v: v in ("none", "all", "lora_only")),
    "init_lora_weights": (
        "true, false or a method name",
        lambda v: _text(64)(v) or isinstance(v, bool),
    ),
    "qalora_group_size": ("a positive integer", lambda v: _is_int(v) and 0 < v < _INDEX_LIMIT),  # type: ignore[operator]
    "use_bdlora": ("an object or a boolean", lambda v: isinstance(v, dict | bool)),
}
for _key in (
    "inference_mode",
    "fan_in_fan_out",
    "use_rslora",
    "use_dora",
    "use_qalora",
    "lora_bias",
    "ensure_weight_tying",
):
    _RULES[_key] = ("true or false", lambda v: isinstance(v, bool))
for _key in (
    "auto_mapping",
    "megatron_config",
    "loftq_config",
    "eva_config",
    "corda_config",
    "lora_ga_config",
    "velora_config",
    "monteclora_config",
    "runtime_config",
    "arrow_config",
    "kasa_config",
):
    _RULES[_key] = ("an object", lambda v: isinstance(v, dict))


def _number(config: dict[str, Any], key: str, *, integer: bool, limit: float) -> Any:
    value = config.get(key)
    ok = _is_int(value) if integer else _is_number(value)
    if not ok or not 0 < value <= limit:  # type: ignore[operator]
        what = "a positive integer" if integer else "a positive number"
        raise _fail(key, f"{what} of at most {limit:g}", value)
    return value


def _patterns(config: dict[str, Any], key: str, *, integer: bool) -> PatternTable:
    value = config.get(key)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _fail(key, "an object mapping module patterns to numbers", value)
    limit = MAX_RANK if integer else MAX_ALPHA
    what = "integers" if integer else "numbers"
    for item in value.values():
        ok = _is_int(item) if integer else _is_number(item)
        if not ok or not 0 < item <= limit:
            raise InvalidAdapter(
                f"{CONFIG}: {key} must map module patterns to positive {what} of at most "
                f"{limit:g}, got {_show(item)}"
            )
    return PatternTable(value, field=key)


def check_config(raw: object) -> AdapterConfig:
    """``raw`` (parsed JSON) as a checked LoRA config.

    Raises:
        InvalidAdapter: not a LORA config, or any value of the wrong type or out of range.
    """
    if not isinstance(raw, dict):
        raise InvalidAdapter(f"{CONFIG} must be a JSON object")
    peft_type = raw.get("peft_type")
    if peft_type != "LORA":
        raise InvalidAdapter(
            f"{CONFIG}: unsupported peft_type {_show(peft_type)}; only LORA is supported"
        )
    _number(raw, "r", integer=True, limit=MAX_RANK)
    _number(raw, "lora_alpha", integer=False, limit=MAX_ALPHA)
    for key, (what, test) in _RULES.items():
        value = raw.get(key)
        if value is not None and not test(value):
            raise _fail(key, what, value)
    config = AdapterConfig(raw)
    config.rank_table = _patterns(raw, "rank_pattern", integer=True)
    config.alpha_table = _patterns(raw, "alpha_pattern", integer=False)
    config.saved = SavedModules(raw.get("modules_to_save") or [])
    return config


def parse_config(data: bytes) -> AdapterConfig:
    """The checked config in ``data``, the bytes of an ``adapter_config.json``."""
    return check_config(strict_json.loads(data, what=CONFIG))
