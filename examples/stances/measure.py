"""The behavioural measurements of the experiment, on a ``RoleSet`` (the product's loader).

Each function takes resident roles and returns numbers; ``report.py`` prints them and the
slow test (tests/test_stances_training.py) asserts on them, so both measure the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from examples.stances import STANCES, Example, examples
from examples.stances.train import mean_nll
from registry.loader import RoleSet

BASE = "base model"


def heldout() -> dict[str, list[Example]]:
    """Each stance's held-out prompts with reference responses (never trained on)."""
    return {stance: examples(stance, "heldout") for stance in STANCES}


def nll_matrix(
    roles: RoleSet,
    tokenizer: Any,
    names: Mapping[str, str | None],
    sets: Mapping[str, list[Example]],
) -> dict[str, dict[str, float]]:
    """Mean held-out NLL: ``matrix[row][set]`` with the role ``names[row]`` active (None: base)."""
    matrix = {}
    for row, role in names.items():
        roles.switch(role)
        matrix[row] = {name: mean_nll(roles, tokenizer, pairs) for name, pairs in sets.items()}
    return matrix


def mixture_nll(
    roles: RoleSet,
    tokenizer: Any,
    first: str,
    second: str,
    weights: Sequence[float],
    sets: Mapping[str, list[Example]],
) -> dict[float, dict[str, float]]:
    """NLL on each set under ``roles.mix({first: w, second: 1 - w})`` for each ``w``."""
    out = {}
    for w in weights:
        roles.mix({first: w, second: 1.0 - w})
        out[w] = {name: mean_nll(roles, tokenizer, pairs) for name, pairs in sets.items()}
    roles.switch(None)
    return out


def own_best(matrix: Mapping[str, Mapping[str, float]], rows: Sequence[str]) -> dict[str, str]:
    """For each held-out set, the row (among ``rows``) that fits it best (lowest NLL)."""
    sets = next(iter(matrix.values())).keys()
    return {s: min(rows, key=lambda row: matrix[row][s]) for s in sets}
