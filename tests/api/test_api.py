"""The /v1 API through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from registry.lora.inspection import inspect_dir
from registry.manifest import manifest_of
from registry.settings import Settings
from tests.api.conftest import bearer
from tests.conftest import snapshot


def upload(client: TestClient, folder: Path, secret: str) -> list[dict]:
    manifest = manifest_of(inspect_dir(folder).files)
    for entry in manifest.files:
        data = (folder / entry.path).read_bytes()
        response = client.put(f"/v1/blobs/{entry.digest}", content=data, headers=bearer(secret))
        assert response.status_code in (200, 201), response.text
    return [f.model_dump() for f in manifest.files]


def publish(client: TestClient, folder: Path, target: str, secret: str, **extra: object):
    ref, version = target.split("@")
    namespace, name = ref.split("/")
    files = upload(client, folder, secret)
    return client.post(
        f"/v1/adapters/{namespace}/{name}/versions",
        json={"version": version, "files": files, **extra},
        headers=bearer(secret),
    )


def test_publish_resolve_and_download(
    client: TestClient, token: Callable[..., str], adapters: dict[str, Path]
) -> None:
    secret = token("publish")
    created = publish(client, adapters["curious"], "default/curious@1.0.0", secret, alias="prod")
    assert created.status_code == 201, created.text
    body = created.json()
    again = publish(client, adapters["curious"], "default/curious@1.0.0", secret)
    assert again.status_code == 200 and again.json()["digest"] == body["digest"]
    conflict = publish(client, adapters["confident"], "default/curious@1.0.0", secret)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "conflict" and conflict.headers["x-error-code"] == "conflict"

    resolved = client.get("/v1/resolve", params={"spec": "curious@prod"}).json()
    assert (resolved["version"], resolved["digest"]) == ("1.0.0", body["digest"])
    weights = next(f for f in resolved["files"] if f["path"] == "adapter_model.safetensors")
    data = (adapters["curious"] / "adapter_model.safetensors").read_bytes()

    full = client.get(f"/v1/blobs/{weights['digest']}")
    assert full.status_code == 200 and full.content == data
    assert full.headers["etag"] == f'"{weights["digest"]}"'
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.head(f"/v1/blobs/{weights['digest']}").headers["content-length"] == str(len(data))
    cached = client.get(
        f"/v1/blobs/{weights['digest']}", headers={"If-None-Match": f'"{weights["digest"]}"'}
    )
    assert cached.status_code == 304 and cached.content == b""
    part = client.get(f"/v1/blobs/{weights['digest']}", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = client.get(f"/v1/blobs/{weights['digest']}", headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == data[-7:]
    bad = client.get(f"/v1/blobs/{weights['digest']}", headers={"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"


def test_upload_verifies_digest_and_changes_nothing_on_refusal(
    client: TestClient, settings: Settings, token: Callable[..., str], adapters: dict[str, Path]
) -> None:
    secret = token("publish")
    client.get("/v1/adapters", headers=bearer(secret))  # first use records last_used_at
    before = snapshot(settings.catalog_url, settings.home / "blobs")
    lying = client.put(
        "/v1/blobs/sha256:" + "ab" * 32, content=b"other bytes", headers=bearer(secret)
    )
    assert lying.status_code == 400 and lying.json()["code"] == "integrity"
    bad = client.put("/v1/blobs/md5:abc", content=b"x", headers=bearer(secret))
    assert bad.status_code == 400 and bad.json()["code"] == "bad_spec"
    missing = client.post(
        "/v1/adapters/default/x/versions",
        json={
            "version": "1.0.0",
            "files": [{"path": "adapter_config.json", "digest": "sha256:" + "cd" * 32, "size": 3}],
        },
        headers=bearer(secret),
    )
    assert missing.status_code == 404 and "not uploaded" in missing.json()["message"]
    assert snapshot(settings.catalog_url, settings.home / "blobs") == before


def test_server_inspects_what_clients_upload(
    client: TestClient, token: Callable[..., str], tmp_path: Path, adapters: dict[str, Path]
) -> None:
    from tests import hostile

    folder, _ = hostile.broken_copy(adapters["curious"], tmp_path / "nan", "nan_weights")
    secret = token("publish")
    files = [
        {"path": p.name, "digest": d, "size": s}
        for p, (d, s) in (
            (p, __import__("registry.manifest").manifest.digest_file(p))
            for p in sorted(folder.iterdir())
        )
    ]
    for entry, path in zip(files, sorted(folder.iterdir()), strict=True):
        client.put(
            f"/v1/blobs/{entry['digest']}", content=path.read_bytes(), headers=bearer(secret)
        )
    response = client.post(
        "/v1/adapters/default/nan/versions",
        json={"version": "1.0.0", "files": files},
        headers=bearer(secret),
    )
    assert response.status_code == 422 and response.json()["code"] == "invalid_adapter"
    assert "NaN" in response.json()["message"]


def test_discovery_endpoints(
    client: TestClient, token: Callable[..., str], adapters: dict[str, Path]
) -> None:
    secret = token("publish")
    publish(client, adapters["curious"], "default/curious-uncertainty@1.0.0", secret)
    publish(client, adapters["confident"], "default/confident-expertise@1.0.0", secret)
    publish(client, adapters["engaged"], "team-a/engaged-difficulty@0.1.0", secret)
    page = client.get("/v1/adapters", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get("/v1/adapters", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [a["name"] for a in rest["items"]] == ["engaged-difficulty"]
    assert [a["name"] for a in client.get("/v1/adapters", params={"rank": 4}).json()["items"]] == [
        "engaged-difficulty"
    ]
    assert (
        client.get("/v1/adapters", params={"target": "q_proj", "q": "curious"}).json()["items"][0][
            "latest"
        ]
        == "1.0.0"
    )
    detail = client.get("/v1/adapters/team-a/engaged-difficulty").json()
    assert [v["version"] for v in detail["versions"]] == ["0.1.0"]
    version = client.get("/v1/adapters/default/curious-uncertainty/versions/1.0.0").json()
    assert version["info"]["fingerprint"]["modules"][0]["delta_norm"] > 0
    by_alias = client.get("/v1/adapters/default/curious-uncertainty/versions/latest")
    assert by_alias.json()["version"] == "1.0.0"
    similar = client.get("/v1/adapters/default/curious-uncertainty/versions/1.0.0/similar").json()
    assert {s["name"] for s in similar} == {"confident-expertise", "engaged-difficulty"}
    diff = client.get(
        "/v1/diff", params={"x": "curious-uncertainty", "y": "confident-expertise"}
    ).json()
    assert (
        diff["cosine"] == next(s for s in similar if s["name"] == "confident-expertise")["cosine"]
    )
    missing = client.get("/v1/adapters/default/nope")
    assert missing.status_code == 404 and missing.json() == {
        "code": "not_found",
        "message": "no adapter default/nope",
    }
    assert client.get("/v1/resolve", params={"spec": "Bad!"}).status_code == 400
    assert client.get("/v1/adapters", params={"rank": "x"}).json()["code"] == "bad_request"


def test_diff_never_reads_server_paths(client: TestClient, adapters: dict[str, Path]) -> None:
    response = client.get("/v1/diff", params={"x": str(adapters["curious"]), "y": "/etc"})
    assert response.status_code == 400 and response.json()["code"] == "bad_spec"


def test_aliases_and_yanks(
    client: TestClient, token: Callable[..., str], adapters: dict[str, Path]
) -> None:
    secret = token("publish")
    publish(client, adapters["curious"], "default/role@1.0.0", secret)
    publish(client, adapters["confident"], "default/role@1.1.0", secret)
    auth = bearer(secret)
    moved = client.put(
        "/v1/adapters/default/role/aliases/prod", json={"version": "1.0.0"}, headers=auth
    )
    assert moved.status_code == 200 and moved.json()["version"] == "1.0.0"
    client.put("/v1/adapters/default/role/aliases/prod", json={"version": "1.1.0"}, headers=auth)
    assert [a["version"] for a in client.get("/v1/adapters/default/role/aliases").json()] == [
        "1.1.0"
    ]
    history = client.get("/v1/adapters/default/role/aliases/history").json()
    assert [(h["from_version"], h["to_version"]) for h in history] == [
        ("1.0.0", "1.1.0"),
        (None, "1.0.0"),
    ]
    yanked = client.post(
        "/v1/adapters/default/role/versions/1.1.0/yank", json={"reason": "bad eval"}, headers=auth
    )
    assert yanked.json()["yanked"] is True
    assert client.get("/v1/resolve", params={"spec": "role"}).json()["version"] == "1.0.0"
    client.delete("/v1/adapters/default/role/versions/1.1.0/yank", headers=auth)
    assert client.get("/v1/resolve", params={"spec": "role"}).json()["version"] == "1.1.0"
    assert client.delete("/v1/adapters/default/role/aliases/prod", headers=auth).status_code == 204
    assert client.get("/v1/resolve", params={"spec": "role@prod"}).status_code == 404


def test_resolve_etag_changes_when_the_answer_does(
    client: TestClient,
    operator,
    adapters: dict[str, Path],  # noqa: ANN001
) -> None:
    operator.publish(adapters["curious"], "role@1.0.0", alias="prod")
    operator.publish(adapters["confident"], "role@1.1.0")
    first = client.get("/v1/resolve", params={"spec": "role@prod"})
    etag = first.headers["etag"]
    again = client.get("/v1/resolve", params={"spec": "role@prod"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    operator.set_alias("role", "prod", "1.1.0")
    moved = client.get("/v1/resolve", params={"spec": "role@prod"}, headers={"If-None-Match": etag})
    assert moved.status_code == 200 and moved.json()["version"] == "1.1.0"
    assert moved.headers["etag"] != etag


def test_health_metrics_and_openapi(client: TestClient) -> None:
    assert client.get("/v1/health").json()["status"] == "ok"
    client.get("/v1/resolve", params={"spec": "nope"})
    metrics = client.get("/metrics").text
    assert (
        'stance_http_requests_total{method="GET",route="/v1/resolve",status="404"} 1.0' in metrics
    )
    schema = client.get("/openapi.json").json()
    assert "/v1/resolve" in schema["paths"] and "/v1/blobs/{digest}" in schema["paths"]
