"""``stance follow --vllm``: alias moves reach a running vLLM (a stand-in on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.embedded import EmbeddedRegistry
from registry.serving.follow import VllmEndpoints, VllmFollower
from registry.serving.resolver import EngineAdapters
from registry.serving.vllm_plugin import StanceResolver
from registry.settings import Settings
from tests.factories import TINY_BASE
from tests.serving.conftest import corrupt_in_store, stance
from tests.serving.fake_vllm import FakeVllm

pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
PROD = "curious-uncertainty@prod"


@pytest.fixture
def vllm(settings: Settings) -> Iterator[FakeVllm]:
    fake = FakeVllm(TINY_BASE, [StanceResolver(EngineAdapters(settings))])
    yield fake
    fake.close()


def chat(vllm: FakeVllm, model: str) -> str:
    """What a client's request makes vLLM hold for ``model`` (resolved through the plugin)."""
    status, body = vllm.answer("/v1/chat/completions", {"model": model})
    assert status == 200, body
    return str(body["adapter_path"])


def lora_calls(vllm: FakeVllm) -> list[tuple[str, dict[str, str]]]:
    return [(path, body) for path, body in vllm.calls if "lora_adapter" in path]


def follow_once(vllm: FakeVllm, *specs: str) -> list[dict[str, str]]:
    return json.loads(stance("follow", "--vllm", vllm.url, *specs, "--once", "--json"))


def test_a_moved_alias_is_reloaded_and_a_bad_version_never_offered(
    registry: EmbeddedRegistry, adapters: dict[str, Path], settings: Settings, vllm: FakeVllm
) -> None:
    registry.publish(adapters["curious"], "curious-uncertainty@1.2.0", alias="prod")
    registry.publish(adapters["confident"], "curious-uncertainty@1.3.0")
    versions = settings.cache_dir / "versions" / "default" / "curious-uncertainty"
    assert chat(vllm, PROD) == str(versions / "1.2.0")

    assert follow_once(vllm, PROD, "curious-uncertainty@^1") == []  # vLLM holds what prod is
    assert lora_calls(vllm) == []

    registry.set_alias("curious-uncertainty", "prod", "1.3.0")
    [move] = follow_once(vllm, PROD)
    assert move == {
        "name": PROD,
        "version": "default/curious-uncertainty@1.3.0",
        "previous": str(versions / "1.2.0"),
        "action": "reloaded",
        "reason": None,
    }
    assert lora_calls(vllm) == [
        ("/v1/unload_lora_adapter", {"lora_name": PROD}),
        ("/v1/load_lora_adapter", {"lora_name": PROD, "lora_path": str(versions / "1.3.0")}),
    ]
    assert chat(vllm, PROD) == str(versions / "1.3.0")

    # The registry's copy of 1.4.0's weights is corrupt: follow must not offer it.
    registry.publish(adapters["engaged"], "curious-uncertainty@1.4.0")
    weights = registry.resolve("curious-uncertainty@1.4.0").files[-1]
    corrupt_in_store(registry, weights.digest)
    registry.set_alias("curious-uncertainty", "prod", "1.4.0")
    vllm.calls.clear()
    [refused] = follow_once(vllm, PROD)
    assert refused["action"] == "refused" and "hashing to" in refused["reason"]
    assert lora_calls(vllm) == [] and chat(vllm, PROD) == str(versions / "1.3.0")


def test_unloading_alone_leaves_the_next_request_to_the_plugin(
    registry: EmbeddedRegistry, adapters: dict[str, Path], settings: Settings, vllm: FakeVllm
) -> None:
    registry.publish(adapters["curious"], "team-a/curious@1.0.0", alias="prod")
    registry.publish(adapters["confident"], "team-a/curious@1.1.0")
    registry.publish(adapters["engaged"], "team-a/curious@1.2.0")
    chat(vllm, "team-a/curious@prod")
    follower = VllmFollower(registry, VllmEndpoints(vllm.url), ["team-a/curious@prod"], load=False)
    assert follower.run(interval=0.1, rounds=2) == []  # the second round is a cheap "unchanged"

    registry.set_alias("team-a/curious", "prod", "1.1.0")
    [move] = follower.run(interval=0.1, rounds=2)
    assert move.action == "unloaded" and move.version == "team-a/curious@1.1.0"
    assert [path for path, _ in lora_calls(vllm)] == ["/v1/unload_lora_adapter"]
    assert chat(vllm, "team-a/curious@prod").endswith("team-a/curious/1.1.0")
    follower.engine.close()


def test_another_base_model_is_never_offered_and_vllm_down_is_an_error(
    registry: EmbeddedRegistry, adapters: dict[str, Path], vllm: FakeVllm, tmp_path: Path
) -> None:
    registry.publish(adapters["curious"], "curious-uncertainty@1.2.0", alias="prod")
    chat(vllm, PROD)
    from tests.factories import make_adapter

    make_adapter(tmp_path / "other", base_model="stance-test/other-model")
    registry.publish(tmp_path / "other", "curious-uncertainty@2.0.0")
    registry.set_alias("curious-uncertainty", "prod", "2.0.0")
    [refused] = follow_once(vllm, PROD)
    assert refused["action"] == "refused"
    assert "trained on 'stance-test/other-model', but vLLM serves" in refused["reason"]
    assert lora_calls(vllm) == []
    human = stance("follow", "--vllm", vllm.url, PROD, "--once")
    assert human.startswith(f"{PROD}: did not offer default/curious-uncertainty@2.0.0: ")

    url = vllm.url
    vllm.close()
    down = stance("follow", "--vllm", url, PROD, "--once", code=1)
    assert down.startswith(f"error: cannot reach vLLM at {url}")
    usage = stance("follow", "--vllm", url, PROD, "--json", code=2)
    assert "--json needs --once or --rounds" in usage
