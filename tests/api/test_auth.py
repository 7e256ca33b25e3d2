"""Tokens, scopes, namespace grants and the audit log, over real HTTP to ``stance serve``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from registry.catalog.db import make_engine
from registry.catalog.models import AuditEvent
from registry.embedded import EmbeddedRegistry
from registry.lora.inspection import inspect_dir
from registry.manifest import manifest_of
from registry.settings import Settings
from tests.api.conftest import Server, bearer
from tests.conftest import snapshot


def _writes(folder: Path) -> dict[str, tuple[str, str, dict]]:
    """Every writing endpoint: name -> (method, path, request kwargs)."""
    manifest = manifest_of(inspect_dir(folder).files)
    weights = manifest.file("adapter_model.safetensors")
    files = [f.model_dump() for f in manifest.files]
    return {
        "blob.upload": (
            "PUT",
            f"/v1/blobs/{weights.digest}",
            {"content": (folder / weights.path).read_bytes()},
        ),
        "publish": (
            "POST",
            "/v1/adapters/team-a/role/versions",
            {"json": {"version": "2.0.0", "files": files}},
        ),
        "alias.set": (
            "PUT",
            "/v1/adapters/team-a/role/aliases/staging",
            {"json": {"version": "1.0.0"}},
        ),
        "alias.protect": (
            "PUT",
            "/v1/adapters/team-a/role/aliases/prod",
            {"json": {"version": "1.0.0", "protected": True}},
        ),
        "alias.rm": ("DELETE", "/v1/adapters/team-a/role/aliases/canary", {}),
        "yank": ("POST", "/v1/adapters/team-a/role/versions/1.0.0/yank", {"json": {}}),
        "unyank": ("DELETE", "/v1/adapters/team-a/role/versions/1.0.0/yank", {}),
    }


# A refused request still records that its token was used (once a minute): not a catalog change.
TOKENS = ("tokens",)
# who -> the writes it may make (everything else must be refused: 401 or 403)
ALLOWED = {
    "anonymous": set(),
    "read": set(),
    # Blobs are content-addressed, not namespaced: any publisher may upload one.
    "publish:other": {"blob.upload"},
    "publish:team-a": {"blob.upload", "publish", "alias.set", "alias.rm", "yank", "unyank"},
    "publish": {"blob.upload", "publish", "alias.set", "alias.rm", "yank", "unyank"},
    "admin": {"blob.upload", "publish", "alias.set", "alias.protect", "alias.rm", "yank", "unyank"},
}


def _seed(operator: EmbeddedRegistry, adapters: dict[str, Path]) -> None:
    operator.publish(adapters["curious"], "team-a/role@1.0.0")
    operator.set_alias("team-a/role", "canary", "1.0.0")


def test_every_scope_against_every_write(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    settings: Settings,
    adapters: dict[str, Path],
) -> None:
    _seed(operator, adapters)
    secrets = {
        "read": operator.create_token("read").token,
        "publish:other": operator.create_token("publish", namespaces=["other"]).token,
        "publish:team-a": operator.create_token("publish", namespaces=["team-a"]).token,
        "publish": operator.create_token("publish").token,
        "admin": operator.create_token("admin").token,
    }
    server = serve("--log-level", "info")
    writes = _writes(adapters["confident"])
    with httpx.Client(base_url=server.url) as http:
        for who, allowed in ALLOWED.items():
            headers = bearer(secrets[who]) if who != "anonymous" else {}
            for action, (method, path, kwargs) in writes.items():
                if action in allowed:
                    continue
                before = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
                response = http.request(method, path, headers=headers, **kwargs)
                expected = 401 if who == "anonymous" else 403
                assert response.status_code == expected, (who, action, response.text)
                assert response.json()["code"] == (
                    "unauthorized" if expected == 401 else "forbidden"
                )
                after = snapshot(settings.catalog_url, settings.home / "blobs", ignore=TOKENS)
                assert after == before, (
                    who,
                    action,
                )
        for who in ("publish:team-a", "admin"):
            for action in sorted(ALLOWED[who], key=list(writes).index):
                method, path, kwargs = writes[action]
                response = http.request(method, path, headers=bearer(secrets[who]), **kwargs)
                assert response.status_code in (200, 201, 204), (who, action, response.text)
            if who == "publish:team-a":  # put things back for the admin's turn
                operator.set_alias("team-a/role", "canary", "1.0.0")
    log = server.stop()
    assert "POST /v1/adapters/team-a/role/versions" in log  # access log on: the check below bites
    everything = (
        repr(snapshot(settings.catalog_url, settings.home / "blobs"))
        + repr(_audit_rows(settings))
        + log
        + repr(operator.list_tokens())
    )
    for secret in secrets.values():
        assert secret not in everything
        assert secret.split("_", 2)[2] not in everything  # the id is hex; the secret may hold "_"
        assert hashlib.sha256(secret.encode()).hexdigest() not in everything


def _audit_rows(settings: Settings) -> list[AuditEvent]:
    engine = make_engine(settings.catalog_url)
    with engine.connect() as conn:
        rows = list(conn.execute(select(AuditEvent).order_by(AuditEvent.id)))
    engine.dispose()
    return rows


def test_protected_alias_needs_admin(
    client: TestClient,
    operator: EmbeddedRegistry,
    token: Callable[..., str],
    adapters: dict[str, Path],
) -> None:
    operator.publish(adapters["curious"], "role@1.0.0")
    operator.publish(adapters["confident"], "role@1.1.0")
    operator.set_alias("role", "prod", "1.0.0", protect=True)
    publisher = bearer(token("publish"))
    moved = client.put(
        "/v1/adapters/default/role/aliases/prod", json={"version": "1.1.0"}, headers=publisher
    )
    assert moved.status_code == 403 and "protected" in moved.json()["message"]
    removed = client.delete("/v1/adapters/default/role/aliases/prod", headers=publisher)
    assert removed.status_code == 403
    admin = bearer(token("admin"))
    assert (
        client.put(
            "/v1/adapters/default/role/aliases/prod", json={"version": "1.1.0"}, headers=admin
        ).status_code
        == 200
    )
    assert operator.resolve("role@prod").version == "1.1.0"


def test_revoked_expired_and_forged_tokens_are_refused(
    client: TestClient, operator: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    operator.publish(adapters["curious"], "role@1.0.0")
    good = operator.create_token("publish")
    expired = operator.create_token("publish", expires_in=timedelta(seconds=-1))
    revoked = operator.create_token("publish")
    operator.revoke_token(revoked.id)
    forged = good.token[:-4] + ("AAAA" if not good.token.endswith("AAAA") else "BBBB")
    other_id = "stance_" + "0" * 16 + "_" + good.token.split("_", 2)[2]
    path, body = "/v1/adapters/default/role/versions/1.0.0/yank", {"json": {}}
    for secret, message in [
        (expired.token, "expired"),
        (revoked.token, "revoked"),
        (forged, "unknown token"),
        (other_id, "unknown token"),
        ("not-a-token", "unknown token"),
    ]:
        response = client.post(path, headers=bearer(secret), **body)
        assert response.status_code == 401, secret
        assert message in response.json()["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.post(path, headers={"Authorization": "Basic abc"}, **body).status_code == 401
    assert client.post(path, headers=bearer(good.token), **body).status_code == 200


def test_audit_log_records_refusals_and_successes(
    client: TestClient,
    operator: EmbeddedRegistry,
    token: Callable[..., str],
    adapters: dict[str, Path],
) -> None:
    operator.publish(adapters["curious"], "team-a/role@1.0.0")
    reader, publisher, admin = token("read"), token("publish", "team-a"), token("admin")
    path = "/v1/adapters/team-a/role/versions/1.0.0/yank"
    assert client.post(path, json={"reason": "r"}).status_code == 401
    assert client.post(path, json={"reason": "r"}, headers=bearer(reader)).status_code == 403
    assert client.post(path, json={"reason": "r"}, headers=bearer("stance_bad")).status_code == 401
    assert client.post(path, json={"reason": "r"}, headers=bearer(publisher)).status_code == 200
    assert client.get("/v1/audit", headers=bearer(publisher)).status_code == 403
    entries = client.get("/v1/audit", headers=bearer(admin)).json()
    yanks = [(e["action"], e["outcome"]) for e in reversed(entries) if e["action"] == "yank"]
    assert yanks == [
        ("yank", "refused: unauthorized"),
        ("yank", "refused: forbidden"),
        ("yank", "refused: unauthorized"),
        ("yank", "ok"),
    ]
    ok = next(e for e in entries if e["action"] == "yank" and e["outcome"] == "ok")
    assert ok["actor"].startswith("token:") and ok["target"] == "team-a/role@1.0.0"
    assert any(e["action"] == "publish" and e["actor"] == "operator" for e in entries)
    assert any(e["action"] == "token.create" for e in entries)


def test_anonymous_read_can_be_switched_off(
    settings: Settings,
    operator: EmbeddedRegistry,
    token: Callable[..., str],
    adapters: dict[str, Path],
) -> None:
    from registry.api import create_app

    operator.publish(adapters["curious"], "role@1.0.0")
    closed = settings.model_copy(update={"anonymous_read": False})
    with TestClient(create_app(closed)) as client:
        for path in ("/v1/resolve?spec=role", "/v1/adapters", "/", "/adapters/default/role"):
            assert client.get(path).status_code == 401, path
        assert client.get("/v1/health").status_code == 200
        reader = bearer(token("read"))
        assert client.get("/v1/resolve?spec=role", headers=reader).json()["version"] == "1.0.0"


def test_failed_authentication_is_rate_limited(
    client: TestClient, token: Callable[..., str]
) -> None:
    from registry.api.auth import FAILURES

    good = bearer(token("read"))
    assert client.get("/v1/adapters", headers=good).status_code == 200
    for _ in range(FAILURES):
        assert client.get("/v1/adapters", headers=bearer("stance_wrong")).status_code == 401
    limited = client.get("/v1/adapters", headers=bearer("stance_wrong"))
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert client.get("/v1/adapters", headers=good).status_code == 200  # others never block it
    assert client.get("/v1/adapters").status_code == 200  # anonymous reads carry no credentials


@pytest.mark.parametrize("scope", ["root", ""])
def test_token_scope_must_be_known(operator: EmbeddedRegistry, scope: str) -> None:
    from registry.errors import InvalidSpec

    with pytest.raises(InvalidSpec, match="invalid scope"):
        operator.create_token(scope)
