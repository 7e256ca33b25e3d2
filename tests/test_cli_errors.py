"""Errors that say what to do: their message and exit code, usage errors as JSON, repairs."""

from __future__ import annotations

import filecmp
import hashlib
import io
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from registry.embedded import EmbeddedRegistry
from registry.errors import Unreachable
from registry.manifest import FileEntry, digest_file
from registry.settings import Settings
from registry.transfer.cache import Cache
from tests.api.conftest import STANCE, Server, free_port

runner = CliRunner()
sqlite_only = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)


def invoke(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def refused(*args: object, code: str) -> str:
    """A command that must fail with exit 1: one ``error:`` line, ``{code, message}`` on stdout."""
    exit_code, out, err = invoke(*args, "--json")
    assert exit_code == 1, (out, err)
    assert json.loads(out)["code"] == code, out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resolve"], "Missing argument 'SPEC'"),
        (["nonsense"], "No such command 'nonsense'"),
        (["search", "--rank", "abc"], "--rank"),
        (["export"], "Missing option '--format'"),
        (["gc", "--grace", "soon"], "not a duration"),
        (["publish", "--bogus"], "No such option: --bogus"),
    ],
)
def test_usage_errors_exit_2_with_a_json_document(
    settings: Settings, args: list[str], message: str
) -> None:
    exit_code, out, err = invoke(*args, "--json")
    assert exit_code == 2, (out, err)
    body = json.loads(out)  # exactly one JSON document on stdout
    assert body["code"] == "usage" and message in body["message"], body
    assert message in err  # click's own usage message still goes to stderr
    exit_code, out, _ = invoke(*args)
    assert exit_code == 2 and out == ""


@sqlite_only
def test_not_found_locally_hints_at_a_server(settings: Settings) -> None:
    line = refused("resolve", "nope", code="not_found")
    assert "no adapter default/nope" in line
    assert f"looked in the local registry at {settings.home}" in line
    assert "set STANCE_REGISTRY or pass --registry URL" in line


@sqlite_only
def test_pull_refuses_to_overwrite_other_content(
    settings: Settings, adapters: dict[str, Path], tmp_path: Path
) -> None:
    assert invoke("publish", adapters["curious"], "role@1.0.0")[0] == 0
    out = tmp_path / "role"
    assert invoke("pull", "role@1.0.0", "-o", out)[0] == 0
    assert invoke("pull", "role@1.0.0", "-o", out)[0] == 0  # the same files again: fine
    (out / "README.md").write_text("my own notes")
    (out / "extra.txt").write_text("not the registry's")
    line = refused("pull", "role@1.0.0", "-o", out, code="conflict")
    assert f"{out} already holds other content in README.md" in line and "--force" in line
    assert (out / "README.md").read_text() == "my own notes"  # nothing was written
    assert invoke("pull", "role@1.0.0", "-o", out, "--force")[0] == 0
    assert filecmp.cmp(out / "README.md", adapters["curious"] / "README.md", shallow=False)
    assert (out / "extra.txt").exists()  # files the version does not have are left alone


def _project(settings: Settings, adapters: dict[str, Path], folder: Path) -> Path:
    """One locked, synced adapter; returns the cached blob of its weights."""
    with EmbeddedRegistry(settings) as registry:
        registry.publish(adapters["curious"], "role@1.0.0")
    (folder / "stance.toml").write_text('[adapters]\nrole = "^1"\n')
    assert invoke("lock")[0] == 0 and invoke("sync")[0] == 0
    digest, _ = digest_file(adapters["curious"] / "adapter_model.safetensors")
    return settings.cache_dir / "blobs" / digest.removeprefix("sha256:")


def _corrupt(blob: Path) -> None:
    blob.chmod(0o644)
    blob.write_bytes(b"bit rot")
    blob.chmod(0o444)


@sqlite_only
def test_verify_repair_and_sync_fetch_a_corrupt_blob_again(
    settings: Settings,
    adapters: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    blob = _project(settings, adapters, tmp_path)
    weights = adapters["curious"] / "adapter_model.safetensors"
    _corrupt(blob)
    line = refused("verify", code="integrity")
    assert "adapter_model.safetensors: cached file" in line
    assert "stance verify --repair fetches them again" in line
    assert "(run stance sync)" in refused("export", "--format", "vllm", code="integrity")

    exit_code, out, err = invoke("verify", "--repair", "--json")
    assert exit_code == 0, err
    assert json.loads(out)["repaired"] == ["default/role@1.0.0 adapter_model.safetensors"]
    assert filecmp.cmp(blob, weights, shallow=False)
    assert invoke("verify")[0] == 0

    _corrupt(blob)
    assert invoke("sync")[0] == 0  # sync replaces it too
    assert filecmp.cmp(blob, weights, shallow=False)
    exit_code, out, _ = invoke("export", "--format", "vllm", "--json")
    assert exit_code == 0 and json.loads(out)["text"].startswith("vllm serve ")


def test_a_corrupt_cached_blob_stays_when_it_cannot_be_fetched(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    data = b"the real bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    entry = FileEntry(path="x.bin", digest=digest, size=len(data))
    path = cache.blob(entry, lambda _: io.BytesIO(data))
    _corrupt(path)

    def offline(_: str) -> object:
        raise Unreachable("the registry is down")

    with pytest.raises(Unreachable):
        Cache(cache.root).blob(entry, offline)  # type: ignore[arg-type]
    assert path.read_bytes() == b"bit rot"  # left for the next try, never half-replaced
    assert Cache(cache.root).blob(entry, lambda _: io.BytesIO(data)) == path
    assert path.read_bytes() == data


@sqlite_only
def test_a_refused_token_says_what_to_check(
    settings: Settings,
    adapters: dict[str, Path],
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
) -> None:
    server = serve()
    revoked = operator.create_token("publish")
    operator.revoke_token(revoked.id)
    for secret in ("stance_bogus_0000", revoked.token):
        line = refused(
            "--registry",
            server.url,
            "--token",
            secret,
            "publish",
            adapters["curious"],
            "role@1.0.0",
            code="unauthorized",
        )
        assert line == (
            f"error: the registry at {server.url} refused the token (unauthorized): "
            "check STANCE_TOKEN"
        )
    line = refused("--registry", server.url, "resolve", "nope", code="not_found")
    assert "STANCE_REGISTRY" not in line  # a server was asked: no hint about setting one


@sqlite_only
def test_serve_on_a_busy_port_exits_1_saying_so(settings: Settings) -> None:
    port = free_port()
    env = {
        **os.environ,
        "STANCE_DATABASE_URL": settings.catalog_url,
        "STANCE_HOME": str(settings.home),
    }
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        done = subprocess.run(
            [STANCE, "serve", "--port", str(port), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        f"error: port {port} is in use on 127.0.0.1: stop what listens there, or pick "
        "another port with --port"
    )
    assert json.loads(done.stdout)["message"].startswith(f"port {port} is in use")


@sqlite_only
def test_serve_says_where_it_listens_and_logs_requests(settings: Settings, tmp_path: Path) -> None:
    """stdout: one JSON document (--json); stderr: the address, then one line per request."""
    env = {
        **os.environ,
        "STANCE_DATABASE_URL": settings.catalog_url,
        "STANCE_HOME": str(settings.home),
    }
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [STANCE, "serve", "--port", "0", "--json"], env=env, stdout=stdout, stderr=stderr
        )
    try:
        url = None
        for _ in range(600):  # bounded: the banner is printed once the socket is bound
            if process.poll() is not None:
                break
            if out.read_text().endswith("\n"):
                url = json.loads(out.read_text())["url"]
                break
            time.sleep(0.1)  # readiness polling of a process we just started
        assert url is not None, err.read_text()
        for _ in range(600):
            try:
                if httpx.get(f"{url}/v1/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)  # bound, not serving yet: uvicorn is starting
    finally:
        process.terminate()
        process.wait(timeout=30)
    document = json.loads(out.read_text())  # still exactly one document: logs went to stderr
    assert document == {"url": url, "catalog": settings.catalog_url, "store": settings.store_url}
    log = err.read_text()
    assert log.startswith(f"stance registry at {url}  (API {url}/v1, docs {url}/docs")
    assert '"GET /v1/health HTTP/1.1" 200' in log
