"""``stance`` starts fast: what a call imports, and the stdlib-sqlite3 resolve held to the full one.

The wall time itself is measured in ``benchmarks/cli.py`` (never asserted here); these tests
pin what makes it fast, so a module-level import or a drifted query fails a test instead.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from cli import context, pinning
from cli.main import _plain_resolve
from registry.catalog import queries, sqlite_direct
from registry.catalog.db import head_revision
from registry.catalog.revision import HEAD_REVISION
from registry.embedded import EmbeddedRegistry
from registry.settings import Settings
from registry.transfer import lockfile

HEAVY = ("torch", "numpy", "alembic", "sqlalchemy", "pydantic", "httpx", "rich")
# Runs the real entry point (what .venv/bin/stance calls) and reports which heavy packages
# got imported, on stderr after the command's own output.
PROBE = """
import json, sys
watched = set(json.loads(sys.argv[2]))
sys.argv = ["stance", *json.loads(sys.argv[1])]
from cli.main import app
try:
    app()
except SystemExit as exit:
    code = exit.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
sys.stderr.write("\\nHEAVY " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


def probe(*args: str) -> tuple[int, list[str], str]:
    """Exit code, heavy packages imported, and stdout of ``stance ARGS`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    report = json.loads(done.stderr.rpartition("HEAVY ")[2])
    return report["code"], report["heavy"], done.stdout


@pytest.fixture
def published(settings: Settings, adapters: dict[str, Path]) -> None:
    with EmbeddedRegistry(settings, actor="test") as registry:
        registry.publish(adapters["curious"], "role@1.0.0")
        registry.publish(adapters["confident"], "role@1.1.0", alias="prod")
        registry.publish(adapters["engaged"], "team-a/other@2.0.0-rc.1")
        registry.publish(adapters["confident"], "twin@1.0.0")
        registry.publish(adapters["confident"], "twin@1.1.0")  # one digest, two versions
        registry.yank("role@1.1.0", reason="bad eval")


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_resolve_and_help_import_nothing_heavy(published: None) -> None:
    code, heavy, out = probe("resolve", "role@prod", "--json")
    assert code == 0 and json.loads(out)["version"] == "1.1.0"
    assert heavy == [], f"stance resolve imported {heavy}"
    code, heavy, out = probe("--help")
    assert code == 0 and "Publish and find" in out
    assert not set(heavy) & {"torch", "numpy", "alembic"}, heavy


def test_direct_sql_is_what_sqlalchemy_compiles() -> None:
    """The stdlib path runs the very statements of queries._RESOLUTIONS (no drift)."""
    dialect = sqlite.dialect(paramstyle="named")
    for kind, statement in queries._RESOLUTIONS.items():
        assert sqlite_direct.SQL[kind] == str(statement.compile(dialect=dialect)), kind


def test_head_revision_constant_is_alembics_head() -> None:
    assert head_revision() == HEAD_REVISION, (
        "a new migration: set HEAD_REVISION in registry/catalog/revision.py to its revision"
    )


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_direct_resolve_agrees_with_the_full_path(published: None, settings: Settings) -> None:
    fast = {
        "role": "1.0.0",  # latest skips the yanked 1.1.0
        "role@1.1.0": "1.1.0",
        "role@^1": "1.0.0",
        "role@prod": "1.1.0",
        "team-a/other@2.0.0-rc.1": "2.0.0-rc.1",
        "twin@1.1.0": "1.1.0",
    }
    with EmbeddedRegistry(settings) as full:
        digest = full.resolve("role@1.0.0").digest
        fast[f"role@{digest}"] = "1.0.0"
        for spec, version in fast.items():
            direct = sqlite_direct.resolve(settings.catalog_url, spec)
            assert direct is not None, spec
            expected = full.resolve(spec)
            assert (direct.namespace, direct.name, direct.version) == (
                expected.namespace,
                expected.name,
                version,
            )
            assert direct.digest == expected.digest and direct.yanked == expected.yanked
            assert direct.yanked_reason == expected.yanked_reason
        # The full path answers these (and words the errors): the direct one steps aside.
        twin = full.resolve("twin@1.0.0").digest
        for spec in ("nope", "role@9.9.9", "role@^7", "role@staging", f"twin@{twin}"):
            assert sqlite_direct.resolve(settings.catalog_url, spec) is None, spec


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_direct_resolve_steps_aside_for_another_schema(published: None, settings: Settings) -> None:
    path = sqlite_direct.sqlite_path(settings.catalog_url)
    assert path is not None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    assert sqlite_direct.resolve(settings.catalog_url, "role@1.0.0") is None
    assert sqlite_direct.resolve("postgresql://h/db", "role") is None
    assert sqlite_direct.resolve("sqlite:///:memory:", "role") is None


def test_plain_resolve_shortcut_takes_only_the_plain_form() -> None:
    assert _plain_resolve(["resolve", "x@1"]) == ("x@1", False)
    assert _plain_resolve(["resolve", "x@1", "--json"]) == ("x@1", True)
    assert _plain_resolve(["resolve", "--json", "x@1"]) == ("x@1", True)
    for argv in (
        ["resolve"],
        ["resolve", "--help"],
        ["resolve", "--json"],
        ["resolve", "x", "y"],
        ["resolve", "x", "--json", "--json"],
        ["--home", "/h", "resolve", "x"],
        ["pull", "x"],
    ):
        assert _plain_resolve(argv) is None, argv


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"STANCE_HOME": "/srv/stance"},
        {"stance_home": "/lower/case"},
        {"STANCE_DATABASE_URL": "postgresql://u@h/db", "STANCE_HOME": "/x"},
        {"STANCE_REGISTRY": "http://r:8080"},
        {"STANCE_REGISTRY": ""},
    ],
)
def test_cheap_settings_agree_with_settings(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """cli.context reads three settings without pydantic-settings: the same answers."""
    for key in [k for k in os.environ if k.lower().startswith("stance_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    context.overrides.clear()
    assert context.catalog_url() == Settings().catalog_url
    assert context.server_url() == (Settings().registry or None)
    context.overrides["home"] = "/from/option"  # a global option wins over the environment
    assert context.catalog_url() == Settings(home=Path("/from/option")).catalog_url
    context.overrides.clear()


def test_lock_file_names_agree() -> None:
    assert (pinning.WANTS, pinning.LOCK) == (lockfile.WANTS, lockfile.LOCK)
