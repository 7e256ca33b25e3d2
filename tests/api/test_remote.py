"""End to end against real ``stance serve`` processes: the CLI and ``Registry(url)`` over HTTP."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from registry import Registry, RemoteRegistry
from registry.embedded import EmbeddedRegistry
from registry.errors import Conflict, Forbidden, InvalidAdapter, NotFound, Unreachable
from registry.schemas import SearchQuery
from registry.settings import Settings
from tests import hostile
from tests.api.conftest import STANCE, Server


def cli(
    server: Server, token: str | None, home: Path, *args: object
) -> subprocess.CompletedProcess:
    env = {**os.environ, "STANCE_REGISTRY": server.url, "STANCE_HOME": str(home)}
    env.pop("STANCE_DATABASE_URL", None)  # the client has no catalog of its own
    if token:
        env["STANCE_TOKEN"] = token
    return subprocess.run(
        [STANCE, *map(str, args)], env=env, capture_output=True, text=True, timeout=120
    )


def test_python_client_matches_local_behaviour(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    server = serve()
    publisher = operator.create_token("publish").token
    client_settings = Settings(home=tmp_path / "client")
    with Registry(server.url, settings=client_settings, token=publisher) as remote:
        assert isinstance(remote, RemoteRegistry)
        first = remote.publish(adapters["curious"], "curious@1.0.0", alias="prod")
        assert first.created
        assert not remote.publish(adapters["curious"], "curious@1.0.0").created
        with pytest.raises(Conflict, match="already published with different content"):
            remote.publish(adapters["confident"], "curious@1.0.0")
        with pytest.raises(InvalidAdapter):
            folder, _ = hostile.broken_copy(adapters["curious"], tmp_path / "bad", "nan_weights")
            remote.publish(folder, "curious@1.0.1")
        remote.publish(adapters["confident"], "curious@1.1.0")
        assert remote.resolve("curious@prod").version == "1.0.0"
        assert remote.resolve("curious@^1").version == "1.1.0"
        assert remote.resolve("curious").digest == operator.resolve("curious").digest
        with pytest.raises(NotFound):
            remote.resolve("curious@^2")
        cached = remote.fetch("curious@1.0.0")
        assert cached.is_relative_to(client_settings.cache_dir)
        pulled = remote.fetch("curious@1.0.0", tmp_path / "pulled")
        for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
            assert filecmp.cmp(pulled / name, adapters["curious"] / name, shallow=False)
        assert remote.show("curious@prod").info == operator.show("curious@1.0.0").info
        assert remote.search(SearchQuery(text="cur")).items[0].latest == "1.1.0"
        remote.yank("curious@1.1.0", reason="regressed")
        assert remote.resolve("curious").version == "1.0.0"
        remote.set_alias("curious", "staging", "1.0.0")
        assert [m.to_version for m in remote.alias_history("curious")] == ["1.0.0", "1.0.0"]
        assert remote.diff("curious@1.0.0", str(adapters["curious"])).cosine == pytest.approx(1)
        with pytest.raises(Forbidden):
            remote.set_alias("curious", "prod", "1.0.0", protect=True)  # admin only


def test_cli_over_http(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    server = serve()
    publisher = operator.create_token("publish").token
    home = tmp_path / "cli"
    published = cli(
        server, publisher, home, "publish", adapters["curious"], "team-a/role@1.0.0", "--json"
    )
    assert published.returncode == 0, published.stderr
    body = json.loads(published.stdout)
    assert set(body) == {"namespace", "name", "version", "digest"}
    resolved = cli(server, None, home, "resolve", "team-a/role@1", "--json")
    assert json.loads(resolved.stdout) == {**body, "yanked": False}
    pulled = cli(server, None, home, "pull", "team-a/role", "-o", tmp_path / "out", "--json")
    assert pulled.returncode == 0 and filecmp.cmp(
        tmp_path / "out" / "adapter_model.safetensors",
        adapters["curious"] / "adapter_model.safetensors",
        shallow=False,
    )
    denied = cli(server, None, home, "yank", "team-a/role@1.0.0", "--json")
    assert denied.returncode == 1 and json.loads(denied.stdout)["code"] == "unauthorized"
    assert denied.stderr.startswith("error: ") and denied.stderr.count("\n") == 1
    missing = cli(server, None, home, "show", "team-a/nope", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout)["code"] == "not_found"
    tokens = cli(server, None, home, "token", "list")
    assert tokens.returncode == 1 and "needs the catalog itself" in tokens.stderr


def test_unreachable_registry_is_a_clear_error(tmp_path: Path) -> None:
    remote = RemoteRegistry("http://127.0.0.1:9", settings=Settings(home=tmp_path), attempts=2)
    with pytest.raises(Unreachable, match="cannot reach the registry at http://127.0.0.1:9"):
        remote.resolve("anything")


def test_servers_share_no_state(
    pg_url: str, adapters: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several processes (and workers) over one PostgreSQL catalog and one store: one registry."""
    from tests.conftest import _truncate

    _truncate(pg_url)
    monkeypatch.setenv("STANCE_DATABASE_URL", pg_url)
    settings = Settings()
    env = {**os.environ, "STANCE_HOME": str(settings.home)}
    first, second = Server(env), Server(env, "--workers", "2")
    try:
        with EmbeddedRegistry(settings) as operator:
            publisher = operator.create_token("publish").token
        with Registry(first.url, settings=Settings(home=tmp_path / "a"), token=publisher) as a:
            a.publish(adapters["curious"], "shared@1.0.0", alias="prod")
        with Registry(second.url, settings=Settings(home=tmp_path / "b")) as b:
            assert b.resolve("shared@prod").version == "1.0.0"
            folder = b.fetch("shared@prod", tmp_path / "pulled")
            assert filecmp.cmp(
                folder / "adapter_model.safetensors",
                adapters["curious"] / "adapter_model.safetensors",
                shallow=False,
            )
        for _ in range(4):  # spread over both workers of the second server
            page = httpx.get(f"{second.url}/adapters/default/shared/1.0.0")
            assert page.status_code == 200 and "<svg" in page.text
    finally:
        first.stop()
        second.stop()
