"""resolve's fast path (issue 19) answers exactly what the full path answers, and never late.

On SQLite, ``GET /v1/resolve`` reads the catalog through ``catalog.sqlite_direct`` (a held
stdlib connection, JSON built without pydantic), on PostgreSQL through ``catalog.pg_direct``
(the event loop's own libpq connections), and skips FastAPI's dependency machinery for the
common request. These tests hold it to the full path (SQLAlchemy, ``Resolution``) byte for
byte, to read-your-writes across connections, and to every rule of the declared route.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from registry.api import create_app
from registry.catalog import pg_direct, queries, sqlite_direct
from registry.catalog.db import make_engine
from registry.catalog.revision import HEAD_REVISION
from registry.catalog.sqlite_direct import Resolved
from registry.embedded import EmbeddedRegistry
from registry.manifest import FileEntry, Manifest
from registry.schemas import Resolution
from registry.settings import Settings
from registry.spec import parse_spec
from tests.api.conftest import bearer
from tests.reliability.postgres import Cluster

# Text as it may sit in the catalog: quotes, backslashes, control characters, non-ASCII.
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
DIGEST = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
ENTRY = st.builds(
    FileEntry,
    path=TEXT.filter(lambda p: p not in ("", ".", "..") and not set(p) & set("/\\\x00")),
    digest=DIGEST,
    size=st.integers(min_value=0, max_value=2**62),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    text=st.lists(TEXT, min_size=4, max_size=4),
    optional=st.lists(st.none() | TEXT, min_size=4, max_size=4),
    yanked=st.booleans(),
    digest=DIGEST,
    entries=st.lists(ENTRY, max_size=5, unique_by=lambda e: e.path),
)
def test_direct_json_is_pydantics_byte_for_byte(
    text: list[str],
    optional: list[str | None],
    yanked: bool,
    digest: str,
    entries: list[FileEntry],
) -> None:
    manifest = Manifest.of(entries)
    namespace, name, version, _ = text
    yanked_reason, base_model, hub_repo, hub_revision = optional
    fields: dict[str, Any] = dict(
        namespace=namespace,
        name=name,
        version=version,
        digest=digest,
        yanked=yanked,
        yanked_reason=yanked_reason,
        base_model=base_model,
        hub_repo=hub_repo,
        hub_revision=hub_revision,
    )
    direct = sqlite_direct.Resolved(**fields, manifest=manifest.canonical())
    full = Resolution(**fields, files=Manifest.model_validate_json(manifest.canonical()).files)
    assert direct.to_json() == full.model_dump_json().encode()


SPECS = (
    "role",  # latest skips the yanked 1.1.0
    "role@1.0.0",
    "role@1.1.0",  # yanked, with its reason
    "role@^1",  # a range: in a worker thread
    "role@>=1.0.0 <2",
    "role@prod",
    "default/role@prod",
    "team-a/other@2.0.0-rc.1",
    "twin@1.0.0",
)
# Errors are the full path's: the direct one steps aside and it words them.
MISSES = (
    "team-a/other",
    "nope",
    "role@9.9.9",
    "role@^7",
    "role@staging",
    "Bad!",
    "team-a/nope@prod",
)


@pytest.fixture
def published(operator: EmbeddedRegistry, adapters: dict[str, Path]) -> None:
    operator.publish(adapters["curious"], "role@1.0.0")
    operator.publish(adapters["confident"], "role@1.1.0", alias="prod")
    operator.publish(adapters["engaged"], "team-a/other@2.0.0-rc.1")
    operator.publish(adapters["confident"], "twin@1.0.0")
    operator.publish(adapters["confident"], "twin@1.1.0")  # one digest, two versions
    operator.yank("role@1.1.0", reason='bad "eval" \\ \n ünïcode')


def _full(settings: Settings, spec: str) -> bytes:
    engine = make_engine(settings.catalog_url)
    try:
        with engine.connect() as conn:
            return queries.resolve_spec(conn, spec).model_dump_json().encode()
    finally:
        engine.dispose()


def test_every_answer_is_the_full_paths(
    published: None, client: TestClient, settings: Settings, catalog_url: str
) -> None:
    app_state = client.app.state.registry  # type: ignore[attr-defined]
    assert (app_state.direct is not None) == catalog_url.startswith("sqlite")
    assert (app_state.postgres is not None) == catalog_url.startswith("postgresql")
    twin = client.get("/v1/resolve", params={"spec": "twin@1.0.0"}).json()["digest"]
    for spec in (*SPECS, f"twin@{twin}", f"role@{_digest(client, 'role@1.0.0')}"):
        answer = client.get("/v1/resolve", params={"spec": spec})
        assert answer.status_code == 200, (spec, answer.text)
        assert answer.content == _full(settings, spec), spec
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-cache"
    assert client.get("/v1/resolve", params={"spec": f"twin@{twin}"}).json()["version"] == "1.1.0"
    for spec in MISSES:
        answer = client.get("/v1/resolve", params={"spec": spec})
        assert answer.status_code in (400, 404), (spec, answer.text)
        assert set(answer.json()) == {"code", "message"}, spec


def _digest(client: TestClient, spec: str) -> str:
    return client.get("/v1/resolve", params={"spec": spec}).json()["digest"]


def test_a_write_from_another_connection_is_seen_at_once(
    published: None, client: TestClient, settings: Settings, adapters: dict[str, Path]
) -> None:
    """No answer is remembered: each request reads the catalog as committed now, whoever
    committed it (another process's connection stands in as another registry here)."""
    first = client.get("/v1/resolve", params={"spec": "role@prod"})
    assert first.json()["version"] == "1.1.0"
    with EmbeddedRegistry(settings, actor="other") as other:
        other.set_alias("role", "prod", "1.0.0")
        moved = client.get(
            "/v1/resolve",
            params={"spec": "role@prod"},
            headers={"If-None-Match": first.headers["etag"]},
        )
        assert moved.status_code == 200 and moved.json()["version"] == "1.0.0"
        other.yank("role@1.0.0", reason="regressed")
        assert client.get("/v1/resolve", params={"spec": "role@prod"}).json()["yanked"] is True
        assert client.get("/v1/resolve", params={"spec": "role@^1"}).status_code == 404
        other.publish(adapters["engaged"], "role@1.2.0")
        assert client.get("/v1/resolve", params={"spec": "role"}).json()["version"] == "1.2.0"
        assert client.get("/v1/resolve", params={"spec": "role@^1"}).json()["version"] == "1.2.0"


def test_parameters_and_validation_are_the_declared_routes(
    published: None, client: TestClient
) -> None:
    missing = client.get("/v1/resolve")
    assert missing.status_code == 422 and missing.json()["code"] == "bad_request"
    assert missing.json()["message"].startswith("query.spec: ")
    long = client.get("/v1/resolve", params={"spec": "r" * 201})
    assert long.status_code == 422 and "200 characters" in long.json()["message"]
    at_limit = client.get("/v1/resolve", params={"spec": "r" * 200})
    assert at_limit.status_code == 400 and at_limit.json()["code"] == "bad_spec"
    # FastAPI reads the last of a repeated query parameter, and so does the shortcut.
    both = client.get("/v1/resolve?spec=nope&spec=role@1.0.0")
    assert both.status_code == 200 and both.json()["version"] == "1.0.0"
    etag = client.get("/v1/resolve", params={"spec": "role@prod"}).headers["etag"]
    for tags in (etag, f'"other", {etag}', f"  {etag} "):
        again = client.get(
            "/v1/resolve", params={"spec": "role@prod"}, headers={"If-None-Match": tags}
        )
        assert again.status_code == 304 and again.content == b"", tags
        assert again.headers["etag"] == etag
    stale = client.get(
        "/v1/resolve", params={"spec": "role@prod"}, headers={"If-None-Match": '"x"'}
    )
    assert stale.status_code == 200


def test_security_headers_and_metrics_cover_the_shortcut(
    published: None, client: TestClient
) -> None:
    ok = client.get("/v1/resolve", params={"spec": "role@prod"})
    client.get(
        "/v1/resolve", params={"spec": "role@prod"}, headers={"If-None-Match": ok.headers["etag"]}
    )
    client.get("/v1/resolve", params={"spec": "nope"})
    for answer in (ok, client.get("/v1/resolve", params={"spec": "nope"})):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in answer.headers["content-security-policy"]
    metrics = client.get("/metrics").text
    for status, count in (("200", 1), ("304", 1), ("404", 2)):
        line = f'stance_http_requests_total{{method="GET",route="/v1/resolve",status="{status}"}}'
        assert f"{line} {count:.1f}" in metrics, status


def test_tokens_and_closed_reads_take_the_read_rule(
    published: None, settings: Settings, token: Callable[..., str]
) -> None:
    closed = settings.model_copy(update={"anonymous_read": False})
    reader = bearer(token("read"))
    with TestClient(create_app(closed)) as client:
        refused = client.get("/v1/resolve", params={"spec": "role@prod"})
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert refused.headers["www-authenticate"] == 'Bearer realm="stance"'
        bad = client.get("/v1/resolve", params={"spec": "role@prod"}, headers=bearer("stance_x"))
        assert bad.status_code == 401
        ok = client.get("/v1/resolve", params={"spec": "role@prod"}, headers=reader)
        assert ok.status_code == 200 and ok.json()["version"] == "1.1.0"
        # The declared route's order: the caller is checked before the parameters.
        assert client.get("/v1/resolve").status_code == 401
        assert client.get("/v1/resolve", headers=reader).status_code == 422
        assert "stance_auth_failures_total 3.0" in client.get("/metrics", headers=reader).text


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_the_reader_never_waits_for_a_lock(settings: Settings, adapters: dict[str, Path]) -> None:
    """A catalog locked by a writer: the lookup steps aside at once (the caller takes the full
    path, off the event loop), and reads again once the lock is gone. In WAL mode readers
    never meet a writer's lock; a catalog switched to a rollback journal shows it."""
    with EmbeddedRegistry(settings, actor="test") as registry:
        registry.publish(adapters["curious"], "role@1.0.0", alias="prod")
    path = sqlite_direct.sqlite_path(settings.catalog_url)
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    assert holder.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    reader = sqlite_direct.open_reader(settings.catalog_url)
    assert reader is not None
    spec = parse_spec("role@prod")
    try:
        found = reader.resolve(spec)
        assert found is not None and found.version == "1.0.0"
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        assert reader.resolve(spec) is None
        assert time.monotonic() - started < 5.0  # the full path would wait its 15 s
        holder.execute("ROLLBACK")
        found = reader.resolve(spec)
        assert found is not None and found.version == "1.0.0"
    finally:
        holder.close()
        reader.close()
    assert sqlite_direct.open_reader("postgresql://h/db") is None


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_no_reader_on_another_schema(published: None, settings: Settings) -> None:
    path = sqlite_direct.sqlite_path(settings.catalog_url)
    assert path is not None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    assert sqlite_direct.open_reader(settings.catalog_url) is None


def _pg_reader(settings: Settings) -> pg_direct.Reader:
    engine = make_engine(settings.catalog_url)
    try:
        reader = pg_direct.open_reader(engine)
    finally:
        engine.dispose()
    assert reader is not None
    return reader


@pytest.mark.parametrize("catalog_url", ["postgresql"], indirect=True)
def test_the_postgresql_reader_answers_the_common_case_itself(
    published: None, settings: Settings
) -> None:
    """The direct path answers every SPEC by itself (not by stepping aside to the full path,
    whose bytes it must match), steps aside for the misses, and holds at most its few
    connections however many lookups wait for one."""
    twin = _full(settings, "twin@1.0.0").decode().split('"digest":"')[1].split('"')[0]
    role = _full(settings, "role@1.0.0").decode().split('"digest":"')[1].split('"')[0]
    hits = (*SPECS, f"role@{role}")
    misses = tuple(m for m in MISSES if m != "Bad!") + (f"twin@{twin}",)

    async def lookups() -> tuple[list[Resolved | None], list[Resolved | None], int]:
        reader = _pg_reader(settings)
        try:
            many = [parse_spec(spec) for spec in hits * 8 + misses * 4]
            found = await asyncio.gather(*(reader.resolve(spec) for spec in many))
            opened = reader._opened
            missed = [await reader.resolve(parse_spec(spec)) for spec in misses]
        finally:
            reader.close()
        return found, missed, opened

    found, missed, opened = asyncio.run(lookups())
    assert opened <= pg_direct.CONNECTIONS
    for spec, answer in zip(hits * 8, found, strict=False):
        assert answer is not None, spec
        assert answer.to_json() == _full(settings, spec), spec
    assert found[len(hits) * 8 :] == [None] * len(misses) * 4
    assert missed == [None] * len(misses)


@pytest.mark.parametrize("catalog_url", ["postgresql"], indirect=True)
def test_a_lost_postgresql_connection_steps_aside_once(published: None, settings: Settings) -> None:
    """A backend killed under the reader (a restart, an administrator): that lookup steps
    aside to the full path, and the next one reads on a new connection."""
    spec = parse_spec("role@prod")

    async def around_a_kill() -> list[str | None]:
        reader = _pg_reader(settings)
        try:
            before = await reader.resolve(spec)
            (held,) = reader._idle
            with psycopg.connect(settings.catalog_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(%s)", (held.pg.backend_pid,)
                ).fetchall()
            assert killed == [(True,)]
            during = await reader.resolve(spec)
            after = await reader.resolve(spec)
        finally:
            reader.close()
        return [None if r is None else r.version for r in (before, during, after)]

    assert asyncio.run(around_a_kill()) == ["1.1.0", None, "1.1.0"]


@pytest.mark.parametrize("catalog_url", ["postgresql"], indirect=True)
def test_no_postgresql_reader_on_another_schema(
    published: None, settings: Settings, tmp_path: Path
) -> None:
    engine = make_engine(settings.catalog_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
        try:
            assert pg_direct.open_reader(engine) is None
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{HEAD_REVISION}'")
    finally:
        engine.dispose()
    sqlite_engine = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert pg_direct.open_reader(sqlite_engine) is None
    finally:
        sqlite_engine.dispose()


def test_postgresql_down_is_the_full_paths_503(
    cluster: Cluster, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """PostgreSQL stopped under a running app: resolve answers 503 ``unreachable`` at once, as
    the full path words it (never a 500 or a hang), and reads again once it is back."""
    settings = Settings(home=tmp_path / "home", database_url=cluster.url)
    with EmbeddedRegistry(settings, actor="test") as registry:
        registry.publish(adapters["curious"], "role@1.0.0", alias="prod")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/resolve", params={"spec": "role@prod"}).status_code == 200
        cluster.stop("immediate")
        for spec in ("role@prod", "role@prod", "role@^1", "role"):  # lost, then refused
            started = time.monotonic()
            answer = client.get("/v1/resolve", params={"spec": spec})
            assert time.monotonic() - started < pg_direct.CONNECT_TIMEOUT_S
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "unreachable"
        cluster.start()
        again = client.get("/v1/resolve", params={"spec": "role@prod"})
        assert again.status_code == 200 and again.json()["version"] == "1.0.0"
