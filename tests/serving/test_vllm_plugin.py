"""The vLLM resolver plugin, loaded by vLLM's own plugin loader, over real catalogs and HTTP."""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolverRegistry

from registry.embedded import EmbeddedRegistry
from registry.manifest import digest_file
from registry.serving.resolver import EngineAdapters, Served, ServingSettings
from registry.serving.vllm_plugin import RESOLVER_NAME, StanceResolver
from registry.settings import Settings
from registry.transfer import lockfile
from registry.transfer.cache import Cache
from tests.factories import TINY_BASE
from tests.serving.conftest import corrupt_in_store

RESOLVER_LOG = "registry.serving.resolver"


def resolve(resolver: StanceResolver, name: str, base: str = TINY_BASE) -> LoRARequest | None:
    return asyncio.run(resolver.resolve_lora(base, name))


def refusal(
    caplog: pytest.LogCaptureFixture, resolver: StanceResolver, name: str, **kw: str
) -> str:
    """The one log line that says why ``name`` was not served."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=RESOLVER_LOG):
        assert resolve(resolver, name, **kw) is None
    lines = [r.getMessage() for r in caplog.records if r.name == RESOLVER_LOG]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def stance_resolver() -> Iterator[Callable[..., StanceResolver]]:
    """Resolvers over EngineAdapters(...) built by the test; their registries closed after."""
    made: list[EngineAdapters] = []

    def make(*args: object, adapters: type[EngineAdapters] = EngineAdapters) -> StanceResolver:
        made.append(adapters(*args))  # type: ignore[arg-type]
        return StanceResolver(made[-1])

    yield make
    for each in made:
        each.close()


@pytest.fixture
def published(registry: EmbeddedRegistry, adapters: dict[str, Path]) -> EmbeddedRegistry:
    registry.publish(adapters["curious"], "curious-uncertainty@1.2.0", alias="prod")
    registry.publish(adapters["engaged"], "team-a/engaged-difficulty@1.0.0", alias="prod")
    registry.publish(adapters["confident"], "confident-expertise@1.0.0")
    return registry


def test_only_the_plugin_imports_vllm() -> None:
    """The registry, the CLI and the other serving modules work without vLLM installed."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted(
        [*root.joinpath("registry").rglob("*.py"), *root.joinpath("cli").rglob("*.py")]
    ):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "vllm" or n.startswith("vllm.") for n in names):
                found.append(str(path.relative_to(root)))
    assert sorted(set(found)) == ["registry/serving/vllm_plugin.py"]


def test_vllm_loads_the_plugin_through_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import vllm.plugins

    points = importlib.metadata.entry_points(group=vllm.plugins.DEFAULT_PLUGINS_GROUP)
    assert [p.value for p in points if p.name == RESOLVER_NAME] == [
        "registry.serving.vllm_plugin:register"
    ]
    monkeypatch.setenv("VLLM_PLUGINS", RESOLVER_NAME)
    monkeypatch.setattr(vllm.plugins, "plugins_loaded", False)
    monkeypatch.setattr(LoRAResolverRegistry, "resolvers", {})
    vllm.plugins.load_general_plugins()
    assert isinstance(LoRAResolverRegistry.get_resolver(RESOLVER_NAME), StanceResolver)


def test_resolves_specs_into_verified_folders(
    published: EmbeddedRegistry,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    stance_resolver: Callable[..., StanceResolver],
) -> None:
    resolver = stance_resolver(settings)
    found = resolve(resolver, "curious-uncertainty@prod")
    assert isinstance(found, LoRARequest)
    folder = settings.cache_dir / "versions" / "default" / "curious-uncertainty" / "1.2.0"
    assert (found.lora_name, found.lora_path, found.base_model_name) == (
        "curious-uncertainty@prod",
        str(folder),
        TINY_BASE,
    )
    assert found.lora_int_id > 0
    for file in published.resolve("curious-uncertainty@1.2.0").files:
        assert digest_file(folder / file.path)[0] == file.digest
    team = resolve(resolver, "team-a/engaged-difficulty@^1")
    assert team is not None and team.lora_path.endswith("team-a/engaged-difficulty/1.0.0")

    assert "no adapter default/nobody" in refusal(caplog, resolver, "nobody@1")
    assert "invalid name" in refusal(caplog, resolver, "HuggingFaceTB/SmolLM2-135M")
    mismatch = refusal(caplog, resolver, "confident-expertise", base="other/model")
    assert f"was trained on {TINY_BASE!r}, but the engine serves 'other/model'" in mismatch

    published.yank("curious-uncertainty@1.2.0", reason="bad eval")
    assert "curious-uncertainty@^1" in refusal(caplog, resolver, "curious-uncertainty@^1")
    with caplog.at_level(logging.WARNING, logger=RESOLVER_LOG):
        pinned = resolve(resolver, "curious-uncertainty@1.2.0")
    assert pinned is not None and "is yanked (bad eval)" in caplog.text


def test_namespaces_and_base_model_settings(
    published: EmbeddedRegistry,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    stance_resolver: Callable[..., StanceResolver],
) -> None:
    monkeypatch.setenv("STANCE_VLLM_NAMESPACES", "default, team-b")
    monkeypatch.setenv("STANCE_VLLM_BASE_MODEL", TINY_BASE)
    serving = ServingSettings()
    assert serving.vllm_namespaces == {"default", "team-b"}
    resolver = stance_resolver(settings, serving)
    why = refusal(caplog, resolver, "team-a/engaged-difficulty@prod")
    assert "namespace 'team-a' is not served here (STANCE_VLLM_NAMESPACES=default,team-b)" in why
    # vLLM hands resolvers the path it serves; the setting names the model that path holds.
    assert resolve(resolver, "curious-uncertainty@prod", base="/models/tiny") is not None


def test_blocking_work_runs_off_the_event_loop(
    published: EmbeddedRegistry,
    settings: Settings,
    stance_resolver: Callable[..., StanceResolver],
) -> None:
    threads: list[int] = []

    class Watched(EngineAdapters):
        def serve(self, base_model: str, name: str) -> Served | None:
            threads.append(threading.get_ident())
            return super().serve(base_model, name)

    resolver = stance_resolver(settings, adapters=Watched)

    async def main() -> tuple[int, LoRARequest | None]:
        return threading.get_ident(), await resolver.resolve_lora(TINY_BASE, "curious-uncertainty")

    loop_thread, found = asyncio.run(main())
    assert found is not None and threads and loop_thread not in threads


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_over_http_then_lock_mode_with_the_registry_stopped(
    published: EmbeddedRegistry,
    serve: Callable[..., object],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    stance_resolver: Callable[..., StanceResolver],
) -> None:
    server = serve()
    client = Settings(home=tmp_path / "engine", registry=server.url)  # type: ignore[attr-defined]
    resolver = stance_resolver(client)
    found = resolve(resolver, "team-a/engaged-difficulty@prod")
    assert found is not None and Path(found.lora_path, "adapter_config.json").is_file()
    assert "was trained on" in refusal(caplog, resolver, "curious-uncertainty", base="x/y")

    remote = resolver.adapters.registry()
    wants = {"default/curious-uncertainty": "prod", "team-a/engaged-difficulty": "^1"}
    locked = lockfile.lock(remote.resolve, wants)
    lockfile.write_lock(locked, tmp_path / "stance.lock")
    lockfile.sync(locked, remote.cache, remote.open_blob)
    server.stop()  # type: ignore[attr-defined]

    offline = stance_resolver(client, ServingSettings(lock=tmp_path / "stance.lock"))
    for name in ("curious-uncertainty@prod", "curious-uncertainty", "team-a/engaged-difficulty@^1"):
        assert resolve(offline, name) is not None, name
    assert "not in the lock file" in refusal(caplog, offline, "confident-expertise@1.0.0")
    assert "the lock pins default/curious-uncertainty@1.2.0" in refusal(
        caplog, offline, "curious-uncertainty@^2"
    )
    assert "was trained on" in refusal(caplog, offline, "curious-uncertainty", base="x/y")

    weights = locked.find("curious-uncertainty").files[-1]
    blob = Cache(client.cache_dir).blob_path(weights.digest)
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    why = refusal(caplog, offline, "curious-uncertainty@prod")
    assert f"blob {weights.digest} is missing from the cache or fails its digest there" in why


def test_a_version_whose_blob_fails_its_digest_is_not_served(
    published: EmbeddedRegistry,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    stance_resolver: Callable[..., StanceResolver],
) -> None:
    weights = published.resolve("confident-expertise@1.0.0").files[-1]
    corrupt_in_store(published, weights.digest)
    why = refusal(caplog, stance_resolver(settings), "confident-expertise@1.0.0")
    assert "hashing to" in why and f"expected {weights.size} bytes with {weights.digest}" in why
    assert not Cache(settings.cache_dir).blob_path(weights.digest).exists()
