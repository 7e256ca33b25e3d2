"""The stance CLI end to end on SQLite and PostgreSQL, through Typer's runner."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from registry.settings import Settings
from tests import hostile
from tests.conftest import snapshot

runner = CliRunner()


def stance(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout


def stance_json(*args: str, code: int = 0) -> dict:
    out = stance(*args, "--json", code=code)
    return json.loads(out)  # exactly one JSON document, nothing else


def failing(*args: str) -> tuple[dict, str]:
    """Run a command that must fail: exit 1, one ``error:`` line, ``{code, message}`` on stdout."""
    result = runner.invoke(app, [*map(str, args), "--json"])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"code", "message"}
    return body, lines[0]


def test_publish_show_resolve_pull(
    settings: Settings, adapters: dict[str, Path], tmp_path: Path
) -> None:
    out = stance_json(
        "publish", adapters["curious"], "curious-uncertainty@1.2.0", "--alias", "prod"
    )
    assert set(out) == {"namespace", "name", "version", "digest"}
    assert out["version"] == "1.2.0" and out["digest"].startswith("sha256:")
    again = stance_json("publish", adapters["curious"], "curious-uncertainty@1.2.0")
    assert again == out  # idempotent: exit 0, same answer

    resolved = stance_json("resolve", "curious-uncertainty@^1.2")
    assert resolved == {**out, "yanked": False}
    assert stance_json("resolve", "curious-uncertainty@prod")["version"] == "1.2.0"
    assert stance_json("resolve", f"curious-uncertainty@{out['digest']}")["version"] == "1.2.0"

    shown = stance_json("show", "curious-uncertainty@1.2.0")
    for key in (
        "peft_type",
        "r",
        "lora_alpha",
        "scaling",
        "use_rslora",
        "use_dora",
        "target_modules",
        "layers",
        "dtype",
        "parameters",
        "bytes",
        "base_model",
        "fingerprint",
    ):
        assert key in shown
    assert shown["fingerprint"]["modules"][0].keys() >= {
        "layer",
        "module",
        "delta_norm",
        "a_norm",
        "b_norm",
        "effective_rank",
        "energy",
    }

    pulled = stance_json("pull", "curious-uncertainty@prod", "-o", tmp_path / "out")
    assert Path(pulled["path"]) == tmp_path / "out"
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert filecmp.cmp(adapters["curious"] / name, tmp_path / "out" / name, shallow=False)


def test_human_output(settings: Settings, adapters: dict[str, Path]) -> None:
    assert "published default/curious@1.0.0" in stance(
        "publish", adapters["curious"], "curious@1.0.0"
    )
    assert "already published" in stance("publish", adapters["curious"], "curious@1.0.0")
    assert "||dW||_F by layer and module" in stance("show", "curious")
    assert 'pin: curious = "1.0.0"' in stance("show", "curious")
    assert "default/curious" in stance("search")
    assert "1.0.0" in stance("versions", "curious")
    assert "q_proj" in stance("inspect", adapters["curious"])


def test_conflict_exits_1(settings: Settings, adapters: dict[str, Path]) -> None:
    stance("publish", adapters["curious"], "c@1.0.0")
    body, line = failing("publish", adapters["confident"], "c@1.0.0")
    assert body["code"] == "conflict"
    assert "already published with different content" in line


def test_versions_aliases_yank(settings: Settings, adapters: dict[str, Path]) -> None:
    stance("publish", adapters["curious"], "team-a/role@1.0.0")
    stance("publish", adapters["confident"], "team-a/role@1.1.0")
    stance("alias", "set", "team-a/role", "prod", "1.0.0")
    assert stance_json("resolve", "team-a/role@prod")["version"] == "1.0.0"
    assert [a["name"] for a in stance_json("alias", "list", "team-a/role")] == ["prod"]
    detail = stance_json("versions", "team-a/role")
    assert [v["version"] for v in detail["versions"]] == ["1.1.0", "1.0.0"]

    yanked = stance_json("yank", "team-a/role@1.1.0", "--reason", "bad eval")
    assert yanked["yanked"] is True
    assert stance_json("resolve", "team-a/role")["version"] == "1.0.0"
    result = runner.invoke(app, ["resolve", "team-a/role@1.1.0", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["yanked"] is True
    assert "warning: team-a/role@1.1.0 is yanked: bad eval" in result.stderr
    stance("unyank", "team-a/role@1.1.0")
    assert stance_json("resolve", "team-a/role")["version"] == "1.1.0"

    stance("alias", "rm", "team-a/role", "prod")
    body, _ = failing("resolve", "team-a/role@prod")
    assert body["code"] == "not_found"


def test_search_json(settings: Settings, adapters: dict[str, Path]) -> None:
    stance("publish", adapters["curious"], "curious@1.0.0")
    stance("publish", adapters["engaged"], "engaged@1.0.0")
    page = stance_json("search", "--rank", "4")
    assert [a["name"] for a in page["items"]] == ["engaged"]
    assert page["next_cursor"] is None


def test_db_upgrade_is_idempotent(settings: Settings) -> None:
    out = stance_json("db", "upgrade")
    assert out["to"] == out["from"]


def test_usage_errors_exit_2(settings: Settings) -> None:
    assert runner.invoke(app, ["publish"]).exit_code == 2
    assert runner.invoke(app, ["nonsense"]).exit_code == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["resolve", "Bad-Name"], "bad_spec", "invalid name 'Bad-Name'"),
        # npm reads 1.0.0+b as a range (=1.0.0); a version published with build metadata is not.
        (["publish", "{curious}", "x@1.0.0+b"], "bad_spec", "build metadata"),
        (["resolve", "x@>=1.0.0 - 2.0.0"], "bad_spec", "out of place"),
        (["resolve", "nope"], "not_found", "no adapter default/nope"),
        (["publish", "{curious}", "Bad@1.0.0"], "bad_spec", "invalid name 'Bad'"),
        (["publish", "{curious}", "x@01.0"], "bad_spec", "invalid version '01.0'"),
        (["publish", "{curious}", "x"], "bad_spec", "expected NAME@VERSION"),
        (["publish", "{curious}", "x@1.0.0", "--alias", "1.0"], "bad_spec", "invalid alias"),
        (["publish", "{curious}", "x@1.0.0", "--alias", "v2"], "bad_spec", "invalid alias"),
        (["alias", "set", "c", "prod", "1.0.0"], "not_found", "no adapter default/c"),
        (["yank", "c@1.0.0"], "not_found", "no adapter default/c"),
    ],
)
def test_bad_input_changes_nothing(
    settings: Settings, adapters: dict[str, Path], args: list[str], code: str, message: str
) -> None:
    stance("publish", adapters["confident"], "seed@1.0.0")  # a non-empty catalog and store
    before = snapshot(settings.catalog_url, settings.home / "blobs")
    body, line = failing(*[a.replace("{curious}", str(adapters["curious"])) for a in args])
    assert body["code"] == code and message in line
    assert snapshot(settings.catalog_url, settings.home / "blobs") == before


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_hostile_adapters_change_nothing(
    settings: Settings, adapters: dict[str, Path], tmp_path: Path, case: str
) -> None:
    stance("publish", adapters["confident"], "seed@1.0.0")
    before = snapshot(settings.catalog_url, settings.home / "blobs")
    hostile.PWNED.unlink(missing_ok=True)
    folder, message = hostile.broken_copy(adapters["curious"], tmp_path / case, case)
    body, line = failing("publish", folder, "victim@1.0.0")
    assert body["code"] == "invalid_adapter" and message in line
    assert snapshot(settings.catalog_url, settings.home / "blobs") == before
    assert not hostile.PWNED.exists()
