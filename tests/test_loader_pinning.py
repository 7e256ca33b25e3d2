"""RoleSet from stance.lock (no catalog, no network), offline restarts, and following an alias."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from registry.embedded import EmbeddedRegistry
from registry.errors import IntegrityError, NotFound, Unreachable
from registry.loader import RoleSet
from registry.remote import RemoteRegistry
from registry.settings import Settings
from registry.transfer.lockfile import lock, read_lock, sync, write_lock
from tests.api.conftest import Server
from tests.test_loader import base, close, logits, peft


@pytest.fixture
def pinned(tmp_path: Path, adapters: dict[str, Path]) -> tuple[Path, Settings]:
    """A lock file and a synced cache, then the catalog and its store deleted."""
    home = tmp_path / "registry"
    with EmbeddedRegistry(Settings(home=home)) as registry:
        registry.publish(adapters["curious"], "curious@1.0.0")
        registry.publish(adapters["confident"], "team-a/confident@2.0.0", alias="prod")
        locked = lock(registry.resolve, {"default/curious": "^1", "team-a/confident": "prod"})
        client = Settings(home=tmp_path / "service")
        from registry.transfer.cache import Cache

        sync(locked, Cache(client.cache_dir), registry.open_blob)
    path = tmp_path / "stance.lock"
    write_lock(locked, path)
    shutil.rmtree(home)  # no catalog, no store: only the lock and the service's cache
    return path, client


def test_lock_needs_no_catalog(
    pinned: tuple[Path, Settings], adapters: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, client = pinned
    monkeypatch.setenv("STANCE_HOME", str(client.home))
    roles = RoleSet(base(), lock=path)
    assert roles.load("curious") == "curious"
    assert roles.load("team-a/confident@prod") == "team-a/confident"
    ref = peft(
        {"curious": adapters["curious"], "confident": adapters["confident"]},
        ["curious", "confident"],
    )
    for name, theirs in (("curious", "curious"), ("team-a/confident", "confident")):
        roles.switch(name)
        ref.set_adapter(theirs)
        close(logits(roles.model), logits(ref))
    with pytest.raises(NotFound, match="the lock pins default/curious@1.0.0"):
        roles.load("curious@2.0.0")
    with pytest.raises(NotFound, match="is not in the lock file"):
        roles.load("engaged")


def test_lock_refuses_a_tampered_cache(
    pinned: tuple[Path, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, client = pinned
    monkeypatch.setenv("STANCE_HOME", str(client.home))
    weights = next(
        f for f in read_lock(path).find("curious").files if f.path == "adapter_model.safetensors"
    )
    blob = client.cache_dir / "blobs" / weights.digest.removeprefix("sha256:")
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    roles = RoleSet(base(), lock=path)
    with pytest.raises(
        IntegrityError,
        match=rf"adapter_model.safetensors: cached file .* hashes "
        rf"to sha256:[0-9a-f]{{64}}, expected {weights.digest}",
    ):
        roles.load("curious")
    assert "curious" not in roles
    blob.unlink()
    with pytest.raises(NotFound, match="is not in the cache: run `stance sync`"):
        RoleSet(base(), lock=path).load("curious")


def test_restart_with_the_registry_down(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    operator.publish(adapters["curious"], "curious@1.0.0", alias="prod")
    server = serve()
    client = Settings(home=tmp_path / "service")
    with RemoteRegistry(server.url, settings=client) as remote:
        RoleSet(base(), registry=remote).load("curious@prod")
    server.stop()
    with RemoteRegistry(server.url, settings=client, attempts=1) as remote:
        with pytest.raises(Unreachable):
            remote.resolve("curious@prod")
        roles = RoleSet(base(), registry=remote)
        assert roles.load("curious@prod") == "curious"  # the last answer, from the cache
        assert roles.resident["curious"].version == "1.0.0"


def test_follow_moves_with_the_alias_and_ignores_a_bad_version(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    settings: Settings,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    for version, key in (("1.0.0", "curious"), ("1.1.0", "confident"), ("1.2.0", "engaged")):
        operator.publish(adapters[key], f"role@{version}")
    operator.set_alias("role", "prod", "1.0.0")
    server = serve()
    with RemoteRegistry(server.url, settings=Settings(home=tmp_path / "service")) as remote:
        roles = RoleSet(base(), registry=remote)
        follower = roles.follow("role@prod", interval=0.05)
        roles.switch("role")
        try:
            operator.set_alias("role", "prod", "1.1.0")
            assert follower.delivered.wait(30), follower.last_error
            assert roles.resident["role"].version == "1.0.0"  # nothing changes mid-flight
            with torch.no_grad():
                out = roles.forward(torch.tensor([[1, 2, 3]])).logits  # swaps, then runs
            assert roles.resident["role"].version == "1.1.0" and roles.active == "role"
            ref = peft({"confident": adapters["confident"]}, ["confident"])
            with torch.no_grad():
                close(out, ref(torch.tensor([[1, 2, 3]])).logits)

            # A version whose bytes do not match its digest is never swapped in.
            weights = operator.resolve("role@1.2.0").files[2]
            hexdigest = weights.digest.removeprefix("sha256:")
            blob = settings.home / "blobs" / "sha256" / hexdigest[:2] / hexdigest[2:4] / hexdigest
            blob.chmod(0o644)
            blob.write_bytes(b"corrupted in the store")
            follower.delivered.clear()
            operator.set_alias("role", "prod", "1.2.0")
            assert follower.failed.wait(30)
            assert (follower.last_error or "").startswith("default/role@1.2.0: ")
            roles.apply_updates()
            assert roles.resident["role"].version == "1.1.0" and not follower.delivered.is_set()
        finally:
            follower.stop()
