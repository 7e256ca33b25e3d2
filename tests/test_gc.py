"""``stance gc`` on SQLite and PostgreSQL: what it frees, what it keeps, and a killed publisher."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from rich.filesize import decimal
from sqlalchemy import func, select
from typer.testing import CliRunner

import cli.main
from cli.gc import gc, parse_duration
from registry.catalog.db import transaction
from registry.catalog.gc import Collection, collect_garbage
from registry.catalog.models import Blob, GcRun, Version
from registry.catalog.service import PUBLISHABLE
from registry.embedded import EmbeddedRegistry
from registry.errors import Conflict, NotFound
from registry.manifest import digest_bytes
from registry.settings import Settings
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parents[1]
ORPHAN = b"bytes that no version references" * 100
LATER = timedelta(hours=2)  # "now" this far ahead makes every blob older than the 1 h default


def run_gc(registry: EmbeddedRegistry, **options: object) -> Collection:
    return collect_garbage(registry.sessions, registry.store, **options)  # type: ignore[arg-type]


def published_digests(registry: EmbeddedRegistry, spec: str) -> set[str]:
    return {f.digest for f in registry.resolve(spec).files}


def stored(registry: EmbeddedRegistry) -> set[str]:
    return {b.digest for b in registry.store.iter()}


@pytest.fixture
def orphan(registry: EmbeddedRegistry, adapters: dict[str, Path]) -> str:
    """One published version plus one blob that nothing references."""
    registry.publish(adapters["curious"], "curious@1.0.0")
    digest = digest_bytes(ORPHAN)
    registry.store.put(digest, io.BytesIO(ORPHAN))
    return digest


def test_old_unreferenced_blobs_are_freed_and_referenced_ones_kept(
    registry: EmbeddedRegistry, orphan: str, tmp_path: Path
) -> None:
    kept = published_digests(registry, "curious@1.0.0")
    result = run_gc(registry, now=datetime.now(UTC) + LATER)
    assert (result.count, result.bytes, result.digests) == (1, len(ORPHAN), [orphan])
    assert not result.dry_run and result.grace_seconds == 3600
    assert stored(registry) == kept
    out = registry.fetch("curious@1.0.0", tmp_path / "out")  # the version is whole
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f.path for f in registry.resolve("curious@1.0.0").files
    )


def test_young_unreferenced_blobs_are_kept(registry: EmbeddedRegistry, orphan: str) -> None:
    """The grace period is what keeps an in-flight publish's blobs (uploaded, not committed)."""
    result = run_gc(registry)
    assert (result.count, result.digests) == (0, [])
    assert orphan in stored(registry)
    assert run_gc(registry, grace=timedelta(0)).digests == [orphan]


def test_dry_run_changes_nothing(
    registry: EmbeddedRegistry, orphan: str, settings: Settings
) -> None:
    before = snapshot(settings.catalog_url, settings.home / "blobs")
    result = run_gc(registry, dry_run=True, now=datetime.now(UTC) + LATER)
    assert result.dry_run and result.digests == [orphan] and result.bytes == len(ORPHAN)
    assert snapshot(settings.catalog_url, settings.home / "blobs") == before


def test_orphan_catalog_rows_are_deleted_after_the_grace_period(
    registry: EmbeddedRegistry, orphan: str
) -> None:
    old, young = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    with transaction(registry.sessions) as session:
        session.add(Blob(digest=old, size=1, created_at=datetime.now(UTC) - LATER))
        session.add(Blob(digest=young, size=1))
    result = run_gc(registry)
    assert result.catalog_rows == 1
    with registry.sessions() as session:
        rows = set(session.scalars(select(Blob.digest)))
    assert young in rows and old not in rows
    assert published_digests(registry, "curious@1.0.0") <= rows


def test_negative_grace_is_refused(registry: EmbeddedRegistry) -> None:
    with pytest.raises(ValueError, match="negative"):
        run_gc(registry, grace=timedelta(seconds=-1))


PUBLISHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from registry.catalog import service
    from registry.catalog.db import transaction
    from registry.catalog.gc import watermark
    from registry.embedded import EmbeddedRegistry


    class PausingStore:
        # The real store, stopping after the n-th upload until the test kills this process.
        def __init__(self, inner, after):
            self.inner, self.after, self.url, self.puts = inner, after, inner.url, 0

        def put(self, digest, source):
            self.inner.put(digest, source)
            self.puts += 1
            if self.puts == self.after:
                print("paused", flush=True)
                sys.stdin.read()

        def __getattr__(self, name):
            return getattr(self.inner, name)


    registry = EmbeddedRegistry()
    folder, target, after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = PausingStore(registry.store, after)
    with registry.sessions() as session:
        mark = watermark(session)
    staged = service.stage_folder(store, folder, max_weights_bytes=10**9, mark=mark)
    print("paused", flush=True)  # every blob is up; the catalog commit comes next
    sys.stdin.read()
    with transaction(registry.sessions) as session:
        service.publish(session, staged, target=target, caller=registry.caller)
    """
)


@pytest.mark.parametrize("after", [1, 0], ids=["after-first-blob", "before-commit"])
def test_publisher_killed_mid_upload_leaves_only_blobs_that_gc_removes(
    registry: EmbeddedRegistry, adapters: dict[str, Path], after: int
) -> None:
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(adapters["confident"]), "killed@1.0.0", str(after)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert publisher.stdout is not None and publisher.stdin is not None
    try:
        assert publisher.stdout.readline() == "paused\n"  # blocks until the uploads happened
    finally:
        publisher.send_signal(signal.SIGKILL)
        publisher.wait()
        publisher.stdout.close()
        publisher.stdin.close()
    assert publisher.returncode == -signal.SIGKILL

    uploaded = stored(registry)
    files = [name for name in PUBLISHABLE if (adapters["confident"] / name).exists()]
    assert len(uploaded) == (after or len(files))
    with pytest.raises(NotFound):
        registry.resolve("killed@1.0.0")
    with registry.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Version)) == 0
        assert session.scalar(select(func.count()).select_from(Blob)) == 0

    assert run_gc(registry).count == 0  # still within the grace period: could be in flight
    result = run_gc(registry, grace=timedelta(0))
    assert set(result.digests) == uploaded
    assert stored(registry) == set()


def _leave_blobs_of(registry: EmbeddedRegistry, folder: Path) -> list[Path]:
    """The folder's files as blobs in the store, as an earlier publish that died leaves them."""
    files = [folder / name for name in PUBLISHABLE if (folder / name).exists()]
    for path in files:
        registry.store.put(digest_bytes(path.read_bytes()), io.BytesIO(path.read_bytes()))
    return files


def test_blobs_collected_while_their_publish_is_in_flight_refuse_its_commit(
    registry: EmbeddedRegistry, adapters: dict[str, Path], settings: Settings, tmp_path: Path
) -> None:
    """The publish finds old unreferenced copies of its blobs (so uploads nothing) and a
    collection deletes them before its commit: the commit is refused and changes nothing;
    publishing again uploads them anew, and the version is whole."""
    files = _leave_blobs_of(registry, adapters["confident"])
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(adapters["confident"]), "raced@1.0.0", "0"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert publisher.stdout is not None
    try:
        assert publisher.stdout.readline() == "paused\n"  # staged: every blob was present
        result = run_gc(registry, now=datetime.now(UTC) + LATER)
        assert len(result.digests) == len(files) and stored(registry) == set()
        before = snapshot(settings.catalog_url, settings.home / "blobs")
        _, err = publisher.communicate("", timeout=120)  # resume: the catalog commit
    finally:
        publisher.kill()
        publisher.wait()
    assert publisher.returncode == 1
    assert "garbage-collected while this publish was in flight" in err
    assert snapshot(settings.catalog_url, settings.home / "blobs") == before
    with pytest.raises(NotFound):
        registry.resolve("raced@1.0.0")

    registry.publish(adapters["confident"], "raced@1.0.0")  # uploads them again: accepted
    out = registry.fetch("raced@1.0.0", tmp_path / "out")
    assert all((out / path.name).read_bytes() == path.read_bytes() for path in files)
    assert run_gc(registry, now=datetime.now(UTC) + LATER).count == 0  # referenced now


def test_a_collection_that_died_is_finished_by_the_next(
    registry: EmbeddedRegistry, adapters: dict[str, Path], settings: Settings, tmp_path: Path
) -> None:
    """Blobs condemned by a run that never deleted them may vanish at any time: publishing
    them is refused until the next collection finishes that run."""
    files = _leave_blobs_of(registry, adapters["curious"])
    digests = sorted(digest_bytes(path.read_bytes()) for path in files)
    with transaction(registry.sessions) as session:  # what a collector leaves when killed
        run = GcRun()
        session.add(run)
        session.flush()
        session.add_all(Blob(digest=d, size=1, condemned_by=run.id) for d in digests)
    before = snapshot(settings.catalog_url, settings.home / "blobs")
    with pytest.raises(Conflict, match="garbage-collected"):
        registry.publish(adapters["curious"], "curious@1.0.0")
    assert snapshot(settings.catalog_url, settings.home / "blobs") == before

    assert run_gc(registry).count == 0  # nothing new to collect; the dead run is finished
    assert stored(registry) == set()
    with registry.sessions() as session:
        assert session.scalar(select(func.count()).where(GcRun.finished_at.is_(None))) == 0
    registry.publish(adapters["curious"], "curious@1.0.0")
    out = registry.fetch("curious@1.0.0", tmp_path / "out")
    assert sorted(digest_bytes(p.read_bytes()) for p in out.iterdir()) == digests


def cli_app() -> typer.Typer:
    """The real ``stance`` callback (global options) with the gc command under it."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(cli.main.main)
    app.command()(gc)
    return app


def test_cli_gc_dry_run_then_collect(registry: EmbeddedRegistry, orphan: str) -> None:
    runner = CliRunner()
    dry = runner.invoke(cli_app(), ["gc", "--grace", "0", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    body = json.loads(dry.stdout)
    assert body["dry_run"] is True and body["digests"] == [orphan]
    assert body["count"] == 1 and body["bytes"] == len(ORPHAN)
    assert orphan in stored(registry)

    human = runner.invoke(cli_app(), ["gc", "--grace", "0s"])
    assert human.exit_code == 0, human.output
    assert f"freed 1 blob(s), {decimal(len(ORPHAN))}" in human.stdout
    assert orphan not in stored(registry)

    again = runner.invoke(cli_app(), ["gc", "--grace", "0", "--json"])
    assert json.loads(again.stdout)["count"] == 0


def test_cli_gc_refuses_a_bad_duration(registry: EmbeddedRegistry) -> None:
    result = CliRunner().invoke(cli_app(), ["gc", "--grace", "soon"])
    assert result.exit_code == 2
    assert "not a duration" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0), ("90", 90), ("90s", 90), ("30m", 1800), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_cli_gc_refuses_a_remote_registry(registry: EmbeddedRegistry, orphan: str) -> None:
    """gc needs the catalog and the store themselves; a server URL is refused, nothing freed."""
    args = ["--registry", "http://127.0.0.1:9", "gc", "--grace", "0", "--json"]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["code"] == "registry_error"
    assert result.stderr.startswith("error: gc needs the catalog itself")
    assert orphan in stored(registry)
