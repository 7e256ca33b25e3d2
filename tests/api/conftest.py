"""API fixtures: the ASGI app in process, and real ``stance serve`` processes on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from registry.api import create_app
from registry.embedded import EmbeddedRegistry
from registry.settings import Settings

STANCE = str(Path(sys.executable).parent / "stance")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def operator(settings: Settings) -> Iterator[EmbeddedRegistry]:
    """The registry's operator: holds the catalog, mints tokens."""
    with EmbeddedRegistry(settings, actor="operator") as registry:
        yield registry


@pytest.fixture
def token(operator: EmbeddedRegistry) -> Callable[..., str]:
    def mint(scope: str, *namespaces: str, **kw: object) -> str:
        return operator.create_token(scope, namespaces=list(namespaces), **kw).token  # type: ignore[arg-type]

    return mint


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real ``stance serve`` process; stopped (and its output checked) on exit."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe nobody reads: the access log of a long test would fill a pipe's
        # 64 KiB and block the server.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [STANCE, "serve", "--port", str(self.port), *args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that never became ready is killed, not left to the next test
            raise

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"stance serve exited: {self.output()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                # Not listening yet: readiness polling of a process we just started.
                time.sleep(0.1)
        raise RuntimeError("stance serve did not become ready")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> str:
        """Stop the server (again is fine) and return everything it printed."""
        if not self.log.closed:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self._printed = self.output()
            self.log.close()
        return self._printed


@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[..., Server]]:
    """Start ``stance serve`` processes over the test's catalog and store."""
    started: list[Server] = []
    env = {
        **os.environ,
        "STANCE_DATABASE_URL": settings.catalog_url,
        "STANCE_HOME": str(settings.home),
    }

    def start(*args: str, **extra_env: str) -> Server:
        server = Server({**env, **extra_env}, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
