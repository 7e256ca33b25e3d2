"""GET /metrics: what the registry did, counted, and lint-clean by Prometheus' own promtool."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import bearer
from tests.api.test_api import publish

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) -> value, read by prometheus_client's parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_the_registry_and_pass_promtool(
    client: TestClient, token: Callable[..., str], adapters: dict[str, Path]
) -> None:
    secret = token("publish")
    assert publish(client, adapters["curious"], "default/role@1.0.0", secret).status_code == 201
    assert publish(client, adapters["curious"], "default/role@1.0.0", secret).status_code == 200
    assert publish(client, adapters["confident"], "default/role@1.0.0", secret).status_code == 409
    files = client.get("/v1/resolve", params={"spec": "role@1.0.0"}).json()["files"]
    weights = next(f for f in files if f["path"] == "adapter_model.safetensors")
    readme = next(f for f in files if f["path"] == "README.md")
    assert len(client.get(f"/v1/blobs/{weights['digest']}").content) == weights["size"]
    assert client.get("/adapters/default/role/1.0.0/files/README.md").status_code == 200
    statuses = [
        client.get("/v1/audit", headers=bearer("stance_nobody_secret")).status_code
        for _ in range(25)  # failed authentications: 20 a minute, then 429
    ]
    assert statuses.count(401) >= 1 and statuses[-1] == 429

    text = client.get("/metrics").text
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0 and lint.stdout + lint.stderr == "", lint.stdout + lint.stderr
    found = samples(text)
    assert found[("stance_publishes_total", (("outcome", "created"),))] == 1
    assert found[("stance_publishes_total", (("outcome", "unchanged"),))] == 1
    assert found[("stance_publishes_total", (("outcome", "refused"),))] == 1
    assert found[("stance_blob_served_bytes_total", ())] == weights["size"] + readme["size"]
    assert found[("stance_auth_failures_total", ())] == statuses.count(401)
    assert found[("stance_rate_limited_requests_total", ())] == statuses.count(429)
    names = {name for name, _ in found}
    assert {"process_cpu_seconds_total", "python_gc_objects_collected_total"} <= names
    assert "python_info" in names
