"""``stance verify --all``: every published blob re-hashed in the store, on local and S3 stores,
SQLite and PostgreSQL catalogs; a corrupt and a deleted blob are named with their versions."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from cli.main import app
from registry.catalog.db import transaction
from registry.catalog.models import Version
from registry.embedded import EmbeddedRegistry
from registry.lora.format import CARD, CONFIG, WEIGHTS
from registry.settings import Settings
from registry.stores import Store
from registry.stores.local import LocalStore
from registry.stores.s3 import S3Store
from tests.reliability.conftest import with_card

runner = CliRunner()
FILES = (CONFIG, WEIGHTS, CARD)
GARBAGE = b"not the bytes that were published\n"


def oracle(path: Path) -> str:
    """The digest by hashlib itself, not by the code under test."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["local", "s3"])
def store_url(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> str:
    url = (settings.home / "blobs").as_uri()
    if request.param == "s3":
        url = request.getfixturevalue("s3_url")
    monkeypatch.setenv("STANCE_STORE", url)  # for the CLI run in this process
    return url


@pytest.fixture
def store_registry(settings: Settings, store_url: str) -> Iterator[EmbeddedRegistry]:
    with EmbeddedRegistry(settings.model_copy(update={"store": store_url})) as registry:
        yield registry


def damage(store: Store, digest: str, *, content: bytes | None) -> None:
    """Overwrite a blob behind the store's back (``content``), or delete it (None)."""
    if isinstance(store, LocalStore):
        path = store.root / "sha256" / digest[7:9] / digest[9:11] / digest[7:]
        os.chmod(path, 0o644)
        path.unlink() if content is None else path.write_bytes(content)
    else:
        assert isinstance(store, S3Store)
        if content is None:
            store.client.delete_object(Bucket=store.bucket, Key=store.key(digest))
        else:
            store.client.put_object(Bucket=store.bucket, Key=store.key(digest), Body=content)


def verify_all() -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["verify", "--all", "--json"])
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_verify_all_names_corrupt_and_missing_blobs(
    store_registry: EmbeddedRegistry, tiny: Path, tmp_path: Path
) -> None:
    carded = with_card(tiny, tmp_path / "carded", "a model card of its own\n")
    for folder, spec in ((tiny, "a@1.0.0"), (tiny, "a@1.1.0"), (carded, "team/b@1.0.0")):
        store_registry.publish(folder, spec)
    code, clean, _ = verify_all()
    published = {oracle(f / n): (f / n).stat().st_size for f in (tiny, carded) for n in FILES}
    assert code == 0 and clean["versions"] == 3
    assert (clean["blobs"], clean["bytes"]) == (len(published), sum(published.values()))

    weights, card = oracle(tiny / WEIGHTS), oracle(carded / CARD)
    store = store_registry.store
    damage(store, weights, content=GARBAGE)
    damage(store, card, content=None)
    code, found, stderr = verify_all()
    assert code == 1 and stderr.startswith("error: ") and len(stderr.splitlines()) == 1
    assert found["code"] == "integrity" and "1 missing" in found["message"]
    assert [(b["digest"], b["versions"]) for b in found["missing"]] == [(card, ["team/b@1.0.0"])]
    assert [
        (b["digest"], b["actual_digest"], b["actual_size"], b["versions"]) for b in found["corrupt"]
    ] == [
        (
            weights,
            "sha256:" + hashlib.sha256(GARBAGE).hexdigest(),
            len(GARBAGE),
            ["default/a@1.0.0", "default/a@1.1.0", "team/b@1.0.0"],
        )
    ]
    assert found["inconsistent"] == []

    # Put the right bytes back: verify passes again.
    damage(store, weights, content=None)
    for path in (tiny / WEIGHTS, carded / CARD):
        with path.open("rb") as source:
            store.put(oracle(path), source)
    assert verify_all()[0] == 0


def test_verify_all_finds_a_manifest_that_disagrees_with_its_rows(
    registry: EmbeddedRegistry, tiny: Path
) -> None:
    """A catalog row edited by hand (or a half-restored backup) is named, not trusted."""
    registry.publish(tiny, "a@1.0.0")
    registry.publish(tiny, "a@2.0.0")
    with transaction(registry.sessions) as session:
        session.execute(
            update(Version).where(Version.version == "2.0.0").values(manifest='{"files":[]}')
        )
    found = registry.verify_store()
    assert found.inconsistent == ["default/a@2.0.0"] and not found.missing and not found.corrupt
    assert "1 inconsistent version(s)" in found.summary()


def test_verify_all_needs_the_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANCE_REGISTRY", "http://127.0.0.1:9")
    result = runner.invoke(app, ["verify", "--all", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["code"] == "registry_error"
    assert "needs the catalog itself" in result.stderr
