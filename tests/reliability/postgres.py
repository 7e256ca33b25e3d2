"""A PostgreSQL cluster of the test's own (``initdb`` + ``pg_ctl``), so it can be stopped and
restarted without touching the machine's server. As root, its commands run as ``postgres``."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import free_port

BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=None, key=lambda p: p.parent.name)
TIMEOUT_S = 60


class Cluster:
    """``initdb`` into a fresh temp folder on a free loopback port; ``remove`` on every path."""

    def __init__(self) -> None:
        if BIN is None:
            raise RuntimeError("no PostgreSQL under /usr/lib/postgresql/*/bin")
        # Not under pytest's tmp_path: as root that is closed to the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="stance-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(BIN / tool), *args]  # type: ignore[operator]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr or done.stdout}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: like a crash (recovery runs at the next start); ``fast``: clean."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        try:
            if self.running():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A private PostgreSQL server, started, removed on every path (tests stop and restart it)."""
    own = Cluster()
    try:
        own.start()
        yield own
    finally:
        own.remove()
