"""Backup and restore with the databases' own tools, as the README's "Backup and restore" says:
the catalog first (``sqlite3 .backup``, ``pg_dump``), then the blobs; the restored registry
passes ``stance verify --all`` and takes new publishes."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from cli.main import app
from registry.embedded import EmbeddedRegistry
from registry.settings import Settings
from tests.conftest import PG_SERVER, _truncate
from tests.reliability.postgres import BIN

runner = CliRunner()


def _publish_some(registry: EmbeddedRegistry, tiny: Path) -> None:
    registry.publish(tiny, "kept@1.0.0", alias="prod")
    registry.publish(tiny, "kept@1.1.0")
    registry.yank("kept@1.1.0", reason="bad eval")


def _restored_registry_works(home: Path, monkeypatch: pytest.MonkeyPatch, tiny: Path) -> None:
    """``stance verify --all`` passes on the restored copy; it resolves and publishes as before."""
    monkeypatch.setenv("STANCE_HOME", str(home))
    result = runner.invoke(app, ["verify", "--all", "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout)["versions"] == 2
    with EmbeddedRegistry(Settings()) as restored:
        assert restored.resolve("kept@prod").version == "1.0.0"
        assert restored.resolve("kept@1.1.0").yanked
        assert restored.publish(tiny, "kept@2.0.0").created  # ids and sequences carried over
        assert restored.verify_store().ok


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_sqlite_backup_and_restore(
    sqlite_template: Path, tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings()
    settings.home.mkdir(parents=True)
    shutil.copy(sqlite_template, settings.home / "catalog.db")  # migrated, checkpointed
    backup = tmp_path / "backup"
    backup.mkdir()
    with EmbeddedRegistry(settings) as registry:  # open: its writes are still in the WAL
        _publish_some(registry, tiny)
        catalog = settings.home / "catalog.db"
        assert Path(f"{catalog}-wal").stat().st_size > 0
        shutil.copy(catalog, tmp_path / "naive.db")  # what copying the file alone gets
        subprocess.run(
            ["sqlite3", str(catalog), f".backup '{backup / 'catalog.db'}'"],
            check=True,
            timeout=60,
        )
        shutil.copytree(settings.home / "blobs", backup / "blobs")  # after the catalog
    with sqlite3.connect(tmp_path / "naive.db") as naive:
        assert naive.execute("SELECT count(*) FROM versions").fetchone() == (0,)

    restored = tmp_path / "restored"
    shutil.copytree(backup, restored)
    _restored_registry_works(restored, monkeypatch, tiny)


def test_postgresql_backup_and_restore(
    pg_url: str, tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert BIN is not None
    _truncate(pg_url)
    settings = Settings(database_url=pg_url)
    with EmbeddedRegistry(settings) as registry:
        _publish_some(registry, tiny)
    dump = tmp_path / "catalog.dump"
    subprocess.run(
        [str(BIN / "pg_dump"), "--format=custom", f"--file={dump}", _libpq(pg_url)],
        check=True,
        timeout=60,
    )
    shutil.copytree(settings.home / "blobs", tmp_path / "backup-blobs")  # after the catalog

    name = f"stance_restored_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        target = pg_url.rsplit("/", 1)[0] + f"/{name}"
        subprocess.run(
            [str(BIN / "pg_restore"), "--no-owner", f"--dbname={_libpq(target)}", str(dump)],
            check=True,
            timeout=60,
        )
        restored = tmp_path / "restored"
        shutil.copytree(tmp_path / "backup-blobs", restored / "blobs")
        monkeypatch.setenv("STANCE_DATABASE_URL", target)
        _restored_registry_works(restored, monkeypatch, tiny)
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
