"""Other tenants and forged headers against a real ``stance serve``: the limiter, proxies, the
audit log's actors, closed reads, security headers, manifest sizes, yanks under protected
aliases, blob existence, and CPU-heavy publishes beside cheap requests."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from registry import Registry
from registry.embedded import EmbeddedRegistry
from registry.errors import RegistryError
from registry.lora.inspection import inspect_dir
from registry.manifest import manifest_of
from registry.schemas import PublishResult
from registry.settings import Settings
from tests.api.conftest import Server, bearer
from tests.conftest import snapshot

TOKENS = ("tokens",)  # a refused request still records that its token was used
SCRIPT = "<img src=x onerror=alert(1)>"
# An id that exists nowhere, with a secret of the right shape.
GUESS = "stance_0123456789abcdef_" + "A" * 43


def _audit(http: httpx.Client, admin: str) -> list[dict]:
    response = http.get("/v1/audit", params={"limit": 1000}, headers=bearer(admin))
    assert response.status_code == 200, response.text
    return response.json()


def test_failed_logins_never_lock_out_a_valid_token_nor_trust_forged_headers(
    serve: Callable[..., Server], operator: EmbeddedRegistry, settings: Settings
) -> None:
    from registry.api.auth import FAILURES

    reader, admin = operator.create_token("read").token, operator.create_token("admin").token
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        for n in range(FAILURES + 5):
            forged = {"X-Forwarded-For": f"10.0.{n}.1", **bearer(GUESS)}
            answer = http.get("/v1/adapters", headers=forged)
            expected = (401, "unauthorized") if n < FAILURES else (429, "rate_limited")
            assert (answer.status_code, answer.json()["code"]) == expected, n
            # Rotating X-Forwarded-For bought nothing; a valid token from the same address,
            # and another guess, are not held for the failures of this one.
            assert http.get("/v1/adapters", headers=bearer(reader)).status_code == 200
        other = http.get("/v1/adapters", headers=bearer(GUESS.replace("0123", "4567")))
        assert other.status_code == 401
        before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
        refused = http.post(
            "/v1/adapters/default/role/versions/1.0.0/yank",
            json={},
            headers={"X-Forwarded-For": SCRIPT, **bearer(GUESS.replace("0123", "89ab"))},
        )
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS) == before
        rows = _audit(http, admin)
    yank = next(row for row in rows if row["action"] == "yank")
    assert (yank["actor"], yank["outcome"]) == ("anonymous", "refused: unauthorized")
    assert yank["detail"]["address"] == "127.0.0.1"  # the TCP peer: no proxy is trusted
    assert SCRIPT not in json.dumps(rows)


def test_forwarded_addresses_only_from_trusted_proxies(
    serve: Callable[..., Server], operator: EmbeddedRegistry, settings: Settings
) -> None:
    admin = operator.create_token("admin").token
    server = serve(STANCE_TRUSTED_PROXIES="127.0.0.1")
    yank = "/v1/adapters/default/role/versions/1.0.0/yank"
    before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
    with httpx.Client(base_url=server.url) as http:
        for address in ("203.0.113.7", SCRIPT):
            answer = http.post(yank, json={}, headers={"X-Forwarded-For": address})
            assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
        assert snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS) == before
        rows = _audit(http, admin)
    addresses = [row["detail"]["address"] for row in rows if row["action"] == "yank"]
    assert addresses == ["unknown", "203.0.113.7"]  # newest first; free text never lands
    assert SCRIPT not in json.dumps(rows)


def test_refused_anonymous_writes_do_not_grow_the_audit_log(
    serve: Callable[..., Server], operator: EmbeddedRegistry, settings: Settings
) -> None:
    from registry.api.auth import BURST

    admin = operator.create_token("admin").token
    server = serve()
    before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
    with httpx.Client(base_url=server.url) as http:
        for _ in range(3 * BURST):
            answer = http.post("/v1/adapters/default/role/versions/1.0.0/yank", json={})
            assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
        rows = [row for row in _audit(http, admin) if row["action"] == "yank"]
    assert len(rows) == BURST  # the rest are counted into the next row, not written one by one
    assert snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS) == before


def test_the_next_audit_row_counts_the_refusals_left_out(settings: Settings) -> None:
    from registry.api.auth import AnonymousRefusals
    from registry.catalog.db import open_catalog
    from registry.catalog.queries import audit_log
    from registry.errors import Unauthorized

    now = [0.0]
    refusals = AnonymousRefusals(burst=2, window=60.0, clock=lambda: now[0])
    catalog = open_catalog(settings.catalog_url)
    try:
        for at in (0.0, 1.0, 2.0, 3.0, 4.0, 61.5):  # two recorded, three left out, then one
            now[0] = at
            exc = Unauthorized("writes need a token")
            refusals.record(catalog.sessions, exc, action="yank", target="/t", address="::1")
        with catalog.sessions() as session:
            rows = audit_log(session, limit=10, before=None, action="yank")
    finally:
        catalog.close()
    assert [row.detail["repeated"] for row in reversed(rows)] == [0, 0, 3]
    assert {row.actor for row in rows} == {"anonymous"}


def test_closed_reads_hide_the_store_and_the_description(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
) -> None:
    operator.publish(adapters["curious"], "role@1.0.0")
    reader = bearer(operator.create_token("read").token)
    server = serve(STANCE_ANONYMOUS_READ="false")
    with httpx.Client(base_url=server.url) as http:
        anonymous = http.get("/v1/health").json()
        assert set(anonymous) == {"status", "catalog_revision"}
        assert http.get("/v1/health", headers=reader).json()["store"].startswith("file://")
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            refused = http.get(path)
            assert refused.status_code == 401 and refused.json()["code"] == "unauthorized", path
            assert http.get(path, headers=reader).status_code == 200, path


def test_every_answer_carries_the_security_headers(
    serve: Callable[..., Server], operator: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    operator.publish(adapters["curious"], "role@1.0.0")
    digest = operator.resolve("role@1.0.0").files[0].digest
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        answers = {
            path: http.get(path)
            for path in (
                "/",
                "/adapters/default/role/1.0.0",
                f"/v1/blobs/{digest}",
                "/v1/resolve?spec=role",
                "/v1/adapters/default/nope",
                "/docs",
            )
        }
    for path, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY", path
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, path
        if path != "/docs":
            assert "unsafe-inline" not in policy, path


def _upload(http: httpx.Client | TestClient, folder: Path, secret: str) -> list[dict]:
    """Upload a folder's files as they are (no local checks: the server is the one judging)."""
    manifest = manifest_of({p.name: p for p in folder.iterdir() if p.is_file()})
    for entry in manifest.files:
        data = (folder / entry.path).read_bytes()
        answer = http.put(f"/v1/blobs/{entry.digest}", content=data, headers=bearer(secret))
        assert answer.status_code == 201, answer.text
    return [f.model_dump() for f in manifest.files]


def test_a_manifest_cannot_lie_about_blob_sizes_across_tenants(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    settings: Settings,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    team_a = operator.create_token("publish", namespaces=["team-a"]).token
    team_b = operator.create_token("publish", namespaces=["team-b"]).token
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        files = _upload(http, adapters["curious"], team_a)
        before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
        config = next(i for i, f in enumerate(files) if f["path"] == "adapter_config.json")
        for lie, status, code in ((4096, 400, "integrity"), (-1, 422, "bad_request")):
            lying = [dict(f) for f in files]
            lying[config]["size"] = files[config]["size"] + lie if lie > 0 else lie
            answer = http.post(
                "/v1/adapters/team-a/role/versions",
                json={"version": "1.0.0", "files": lying},
                headers=bearer(team_a),
            )
            assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
            assert snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS) == before
        # Another tenant publishes the same files; its pull gets the true sizes.
        answer = http.post(
            "/v1/adapters/team-b/role/versions",
            json={"version": "1.0.0", "files": _upload(http, adapters["curious"], team_b)},
            headers=bearer(team_b),
        )
        assert answer.status_code == 201, answer.text
    with Registry(server.url, settings=Settings(home=tmp_path / "client")) as client:
        pulled = client.fetch("team-b/role@1.0.0", tmp_path / "pulled")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (pulled / name).read_bytes() == (adapters["curious"] / name).read_bytes()


def test_yanking_what_a_protected_alias_names_needs_admin(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    settings: Settings,
    adapters: dict[str, Path],
) -> None:
    operator.publish(adapters["curious"], "team-a/role@1.0.0")
    operator.set_alias("team-a/role", "prod", "1.0.0", protect=True)
    publisher = bearer(operator.create_token("publish", namespaces=["team-a"]).token)
    admin = bearer(operator.create_token("admin").token)
    server = serve()
    yank = "/v1/adapters/team-a/role/versions/1.0.0/yank"
    with httpx.Client(base_url=server.url) as http:
        http.get("/v1/health", headers=publisher)  # the token's first use is recorded
        before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
        refused = http.post(yank, json={"reason": "oops"}, headers=publisher)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert "protected" in refused.json()["message"]
        assert snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS) == before
        done = http.post(yank, json={"reason": "bad eval"}, headers=admin)
        assert done.status_code == 200 and done.json()["yanked"]


def test_an_upload_does_not_tell_whose_blobs_exist(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    settings: Settings,
    adapters: dict[str, Path],
) -> None:
    team_a = operator.create_token("publish", namespaces=["team-a"]).token
    team_b = operator.create_token("publish", namespaces=["team-b"]).token
    server = serve()
    stored = manifest_of(inspect_dir(adapters["curious"]).files).file("adapter_config.json")
    absent = manifest_of(inspect_dir(adapters["confident"]).files).file("adapter_config.json")
    with httpx.Client(base_url=server.url) as http:
        data = (adapters["curious"] / stored.path).read_bytes()
        assert http.put(f"/v1/blobs/{stored.digest}", content=data, headers=bearer(team_a))
        http.get("/v1/health", headers=bearer(team_b))  # the token's first use is recorded
        before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
        # team-b, without the bytes, asks about team-a's uncommitted blob and a missing one.
        answers = [
            http.put(f"/v1/blobs/{digest}", content=b"guess", headers=bearer(team_b))
            for digest in (stored.digest, absent.digest)
        ]
        assert [(a.status_code, a.json()["code"]) for a in answers] == [(400, "integrity")] * 2
        assert snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS) == before
        assert http.head(f"/v1/blobs/{stored.digest}").status_code == 404  # not readable yet
        # With the bytes, the answer is the same whether or not someone uploaded them before.
        again = http.put(f"/v1/blobs/{stored.digest}", content=data, headers=bearer(team_b))
        fresh = (adapters["confident"] / absent.path).read_bytes()
        first = http.put(f"/v1/blobs/{absent.digest}", content=fresh, headers=bearer(team_b))
        assert again.status_code == first.status_code == 201


def _backtracking(folder: Path, dest: Path) -> Path:
    """A real adapter whose rank_pattern key takes Python's ``re`` 1.5 s per module path
    (PEFT's ``(.*\\.)?(KEY)$`` on ``model.layers.0.self_attn.q_proj``), holding the GIL."""
    shutil.copytree(folder, dest)
    config = json.loads((dest / "adapter_config.json").read_text())
    config["rank_pattern"] = {r"([a-z0-9_]+\.?)+!": config["r"]}
    (dest / "adapter_config.json").write_text(json.dumps(config))
    return dest


def test_a_costly_publish_does_not_stall_other_requests(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    publisher = operator.create_token("publish").token
    server = serve()
    folder = _backtracking(adapters["curious"], tmp_path / "backtracking")
    outcome: list[object] = []

    def publish() -> None:
        client = Registry(server.url, settings=Settings(home=tmp_path / "c"), token=publisher)
        try:
            outcome.append(client.publish(folder, "heavy@1.0.0"))
        except Exception as exc:  # the answer, whichever it is, is what the test reads
            outcome.append(exc)
        finally:
            client.close()

    worker = threading.Thread(target=publish)
    slowest = 0.0
    with httpx.Client(base_url=server.url, timeout=1.0) as http:
        worker.start()
        while worker.is_alive():
            start = time.monotonic()
            try:
                assert http.get("/v1/health").status_code == 200
            except httpx.TimeoutException:
                slowest = max(slowest, 1.0)
                break
            slowest = max(slowest, time.monotonic() - start)
        worker.join(timeout=120)
    assert not worker.is_alive(), "the publish never finished"
    assert slowest < 1.0, f"a health check waited {slowest:.2f} s behind the publish"
    # Published (RE2 runs the key in linear time) or refused cleanly: never a 500 or a hang.
    assert isinstance(outcome[0], PublishResult | RegistryError), outcome


@pytest.mark.parametrize(
    "path",
    [
        "/?rank=%C2%B2",
        "/v1/adapters?rank=%C2%B2",
        "/v1/adapters?limit=%C2%B2",
        "/v1/audit?before=%C2%B2",
        "/v1/resolve?spec=%C2%B2",
        "/v1/adapters/default/role/versions/%C2%B2",
    ],
)
def test_malformed_queries_are_4xx(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:300])


def test_a_config_field_of_the_wrong_type_is_refused(
    client: TestClient, token: Callable[..., str], adapters: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(adapters["curious"], tmp_path / "typed")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "revision": 123}))
    secret = token("publish")
    files = _upload(client, folder, secret)
    answer = client.post(
        "/v1/adapters/default/typed/versions",
        json={"version": "1.0.0", "files": files},
        headers=bearer(secret),
    )
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_adapter", answer.text


def test_a_write_route_that_forgets_authentication_still_needs_a_token(
    settings: Settings,
) -> None:
    from registry.api import create_app

    app = create_app(settings)

    @app.post("/v1/unguarded")
    def unguarded() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app) as http:
        answer = http.post("/v1/unguarded", json={"big": "x" * 1000})
        assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
        assert answer.headers["connection"] == "close"
