"""What a newcomer reads: help, --version, the heat map's legend, diff and similar tables."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli import report
from cli.main import app
from registry.settings import Settings
from tests.factories import make_adapter, tiny_llama

runner = CliRunner()
sqlite_only = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
WIDE = {"COLUMNS": "200", "TERM": "dumb"}


def stance(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args], env=WIDE)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_help_reads_like_a_manual() -> None:
    top = stance("--help")
    assert "<bool>" not in top and "<list" not in top
    for variable in ("STANCE_HOME", "STANCE_DATABASE_URL", "STANCE_STORE", "STANCE_REGISTRY"):
        assert f"[env var: {variable}]" in top
    panels = ["Publish and find", "Compare", "Curate", "Pin a service", "Operate a registry"]
    assert [top.index(p) for p in panels] == sorted(top.index(p) for p in panels)
    commands = re.findall(r"│ (\w+) {2,}", top)
    assert commands.index("publish") < commands.index("search") < commands.index("resolve")
    assert commands.index("pull") < commands.index("lock") < commands.index("gc")
    assert "Examples:" in top and "Exit codes: 0 success, 1 registry error, 2 bad usage" in top

    token = stance("token", "create", "--help")
    assert "<list[str]>" not in token and "--namespace" in token and " NS " in token
    assert "Example: stance token create" in token
    assert "[namespace/]name[@version|range|alias|digest]" in stance("resolve", "--help")


def test_version() -> None:
    assert stance("--version").strip() == f"stance {version('stance-registry')}"


def _render(table: object) -> str:
    console = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    console.file.close()
    return console.export_text()


def test_heat_map_has_a_legend_and_aligned_numbers() -> None:
    modules = [
        {"layer": layer, "module": module, "delta_norm": value}
        for layer, module, value in [
            (0, "q_proj", 0.0123),
            (0, "v_proj", 0.0021),
            (1, "q_proj", 0.0045),
            (1, "v_proj", 0.0100),
        ]
    ]
    text = _render(report.heat_map({"modules": modules, "layers": {"0": 0.0144, "1": 0.0145}}))
    assert "·· 0-20%  ░░ 20-40%  ▒▒ 40-60%  ▓▓ 60-80%  ██ >=80% of the largest cell (0.0123)" in (
        text
    )
    assert "██ 0.0123" in text and "·· 0.0021" in text and "░░ 0.0045" in text
    assert "██ 0.0100" in text  # 0.0100, not 0.01: every cell has the same decimals
    rows = [line for line in text.splitlines() if re.match(r"│\s+[01] ", line)]
    assert len({line.index("0.0", 10) for line in rows}) == 1  # the numbers line up


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two adapters over 12 layers: layer 10 must sort after 9, not after 1."""
    root = tmp_path_factory.mktemp("deep")
    return (
        make_adapter(root / "a", seed=1, model=tiny_llama(layers=12, hidden=32)),
        make_adapter(root / "b", seed=2, model=tiny_llama(layers=12, hidden=32)),
    )


def test_diff_lists_layers_in_numeric_order_and_the_top_n(deep: tuple[Path, Path]) -> None:
    everything = stance("diff", *deep, "--all")
    layers = [int(m[1]) for m in re.finditer(r"^│\s+(\d+) │", everything, re.MULTILINE)]
    assert layers == sorted(layers) and len(layers) == 24 and layers[-1] == 11
    top = stance("diff", *deep, "--top", "5")
    assert "the 5 of 24 modules that weigh most (--all: every one)" in top
    shown = [int(m[1]) for m in re.finditer(r"^│\s+(\d+) │", top, re.MULTILINE)]
    assert len(shown) == 5 and shown == sorted(shown)
    body = json.loads(stance("diff", *deep, "--top", "5", "--json"))
    assert len(body["modules"]) == 24  # scripts always get every module


@sqlite_only
def test_similar_leaves_out_orthogonal_adapters_and_says_so(
    settings: Settings, adapters: dict[str, Path]
) -> None:
    for key in ("curious", "confident"):
        stance("publish", adapters[key], f"{key}@1.0.0")
    cosine = json.loads(stance("similar", "curious", "--min-cosine", "0", "--json"))[0]["cosine"]
    assert abs(cosine) < 0.05  # random adapters: orthogonal
    assert json.loads(stance("similar", "curious", "--json")) == []
    human = stance("similar", "curious")
    assert "1 more with |cosine| < 0.05 left out" in human and "--min-cosine 0" in human


def test_server_text_reaches_the_terminal_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    """An error or warning a server words can hold escape sequences: they are shown, not run."""
    from cli import output

    hostile = "no such adapter \x1b]0;pwned\x07\x1b[2J\u202egnp.exe"
    output.fail("not_found", hostile, as_json=True)
    output.warn(hostile)
    out, err = capsys.readouterr()
    assert json.loads(out)["message"] == hostile  # JSON escapes it: the exact text for tools
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert err.splitlines() == [
        "error: no such adapter \ufffd]0;pwned\ufffd\ufffd[2J\ufffdgnp.exe",
        "warning: no such adapter \ufffd]0;pwned\ufffd\ufffd[2J\ufffdgnp.exe",
    ]
