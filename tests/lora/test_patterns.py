"""rank_pattern/alpha_pattern on RE2 against PEFT's own ``get_pattern_key`` (Python's ``re``).

Keys are built from regex tokens, including the ones where ``re`` and RE2 differ; PEFT is the
oracle. A key PEFT cannot compile we refuse; a key we accept picks, for every module path, the
value PEFT picks; a key we refuse on purpose (a count RE2 reads apart, a warning) is allowed.
"""

from __future__ import annotations

import re
import time
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peft.utils.other import get_pattern_key

from registry.errors import InvalidAdapter
from registry.lora.patterns import PatternTable, SavedModules

TOKENS = [
    "q", "_", "proj", "q_proj", ".", r"\.", "x", "+", "*", "?", "|", "(", ")", "(?:", "[a-z]",
    "[^.]", "[]q]", r"\d", r"\w", r"\W", r"\s", "^", "$", r"\b", r"\B", r"\A", r"\Z", "{2}",
    "{1,3}", "{,2}", "{01}", "{", "}", ".*", ".+", "(?i)", "(?i:", "[", "]", "a", "1", "-",
    r"\1", "(?=", "(?P<n>", "*?", "++", r"\x71",
]  # fmt: skip
COMPONENTS = ["model", "layers", "0", "12", "q_proj", "x", "xq", "Q_PROJ", "a_b", "é", "٣"]

keys = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6).map("".join)
paths = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4).map(".".join)


def peft_value(patterns: dict[str, int], path: str, default: int) -> int:
    """What PEFT gives ``path``; raises what PEFT raises (re.error, or a warning as error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        re.purge()  # a cached pattern would not warn again
        key = get_pattern_key(list(patterns), path)
    return patterns.get(key, default)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(
    st.dictionaries(keys, st.integers(1, 9), min_size=1, max_size=3), st.lists(paths, max_size=4)
)
def test_tables_pick_what_peft_picks(patterns: dict[str, int], sample: list[str]) -> None:
    try:
        table = PatternTable(patterns, field="rank_pattern")
    except InvalidAdapter:
        table = None
    for path in sample:
        try:
            expected = peft_value(patterns, path, 0)
        except (re.error, Warning):
            assert table is None, f"PEFT fails on {patterns} but we accept it"
            continue
        if table is None:
            continue  # refused on purpose: RE2 would read it apart, or it is not ASCII
        try:
            ours = table.value(path, 0)
        except InvalidAdapter as exc:
            assert not path.isascii(), exc  # \w, \d, (?i)... on a non-ASCII path
            continue
        assert ours == expected, (patterns, path)


def test_first_key_in_config_order_wins() -> None:
    table = PatternTable({"q_proj": 1, r"layers\.0\.q_proj": 2, ".*": 3}, field="rank_pattern")
    assert table.value("model.layers.0.q_proj", 0) == 1
    table = PatternTable({r"layers\.0\.q_proj": 2, "q_proj": 1}, field="rank_pattern")
    assert table.value("model.layers.0.q_proj", 0) == 2
    assert table.value("model.layers.1.q_proj", 0) == 1
    assert table.value("model.layers.1.v_proj", 0) == 0


def test_keys_anchored_at_the_start_use_peft_wrapper() -> None:
    table = PatternTable({"^model": 1, r"x|\Amodel\..*": 2}, field="alpha_pattern")
    assert table.value("model", 0) == 1
    assert table.value("a.model", 0) == 0
    assert table.value("model.q", 0) == 2


def test_matching_is_linear_where_python_backtracks() -> None:
    table = PatternTable({"(x+x+)+y": 4, r"([\w.]+)+#": 5}, field="rank_pattern")
    start = time.perf_counter()
    assert table.value("x" * 1000, 0) == 0
    assert table.value("model.layers.0." * 60, 0) == 0
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "names, tensor, covered",
    [
        (["score"], "base_model.model.score.weight", True),
        (["score"], "base_model.model.scores.weight", False),
        (["model.score"], "base_model.model.model.score.modules_to_save.default.weight", True),
        ([], "base_model.model.score.weight", False),
        (["a+b(c"], "x.a+b(c.weight", True),
    ],
)
def test_saved_modules_are_dotted_substrings(names: list[str], tensor: str, covered: bool) -> None:
    assert SavedModules(names).covers(tensor) is covered
