"""PostgreSQL restarted under load: while it is down, every request is a 503 ``unreachable``
(never a 500, a hang or a traceback); once it is back the same server answers again."""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from registry.embedded import EmbeddedRegistry
from registry.remote import RemoteRegistry
from registry.settings import Settings
from tests.api.conftest import Server, bearer
from tests.reliability.postgres import Cluster

THREADS = 2
PATHS = ("/v1/resolve?spec=steady@1.0.0", "/v1/adapters/default/steady")
WAIT_S = 60


@dataclass
class Load:
    """Threads reading the registry until told to stop; every answer is kept."""

    url: str
    answers: list[tuple[float, int, str | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for turn in itertools.count():
                if self.stop.is_set():
                    return
                began = time.monotonic()
                try:
                    response = client.get(PATHS[turn % len(PATHS)])
                except httpx.HTTPError as exc:  # a hang or a dropped connection: a failure
                    self.failures.append(repr(exc))
                    return
                code = response.headers.get("X-Error-Code")
                self.answers.append((began, response.status_code, code))

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for began, s, _ in self.answers if s == status and began >= since)

    def until(self, status: int, n: int, since: float = 0.0) -> None:
        deadline = time.monotonic() + WAIT_S
        while self.count(status, since) < n:  # polling a condition the load makes true
            assert time.monotonic() < deadline, (status, n, self.answers[-5:], self.failures)
            time.sleep(0.05)


def test_postgresql_restarted_under_load(cluster: Cluster, tiny: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=cluster.url)
    with EmbeddedRegistry(settings) as registry:  # an empty catalog migrates on first use
        registry.publish(tiny, "steady@1.0.0")
        registry.publish(tiny, "steady@1.1.0")
        token = registry.create_token("publish").token
    env = {**os.environ, "STANCE_DATABASE_URL": cluster.url, "STANCE_HOME": str(settings.home)}
    server = Server(env)
    load = Load(server.url)
    threads = [threading.Thread(target=load.run) for _ in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        load.until(200, 10)

        cluster.stop("immediate")  # a crash: recovery runs at the next start
        down = time.monotonic()
        load.until(503, 10, since=down)
        for response in (
            httpx.get(f"{server.url}{PATHS[0]}", timeout=10),
            httpx.put(
                f"{server.url}/v1/adapters/default/steady/aliases/prod",
                json={"version": "1.1.0"},
                headers=bearer(token),
                timeout=10,
            ),
        ):
            assert response.status_code == 503
            body = response.json()
            assert body["code"] == response.headers["X-Error-Code"] == "unreachable"
            assert "unreachable" in body["message"] and str(cluster.port) not in body["message"]

        cluster.start()
        back = time.monotonic()
        load.until(200, 1, since=back)
        recovered = max(began for began, status, _ in load.answers if status == 200)
        load.until(200, 20, since=recovered)
        with RemoteRegistry(server.url, token=token, settings=settings) as remote:
            assert remote.publish(tiny, "steady@1.2.0").created  # writes recover too
            assert remote.set_alias("steady", "prod", "1.2.0").version == "1.2.0"
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        log = server.stop()
    assert load.failures == [], load.failures
    assert {(s, c) for _, s, c in load.answers} == {(200, None), (503, "unreachable")}, log[-3000:]
    assert {s for began, s, _ in load.answers if began > recovered} == {200}
    assert "Traceback" not in log, log[-3000:]
