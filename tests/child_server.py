"""A test server in a child process: it binds port 0, prints the port and serves until its
standard input closes, so start-up and shut-down need neither a guessed port nor a sleep.

Used for moto's S3 server and for our Hugging Face Hub stand-in (``tests.hub_standin``), by the
tests and the benchmarks; a child process keeps the server off the caller's GIL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType

_MOTO = """
import sys
from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


class ChildServer:
    """``with ChildServer(argv, log) as server: server.endpoint`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.endpoint = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> ChildServer:
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=Path(__file__).resolve().parents[1],
            )
        assert self._process.stdout is not None
        port = self._process.stdout.readline().strip()
        if not port.isdigit():
            self._process.kill()
            self._process.wait()
            raise RuntimeError(f"{self.argv} did not start: {self.log.read_text()[-2000:]}")
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


def moto_server(log: Path) -> ChildServer:
    """moto's S3 server (``moto[server]``) on loopback."""
    return ChildServer([sys.executable, "-c", _MOTO], log)


def hub_standin(folder: Path, log: Path, token: str | None = None) -> ChildServer:
    """Our stand-in for the Hub's HTTP API (``tests.hub_standin``), keeping LFS bytes in
    ``folder``; writes need ``token`` when one is given."""
    argv = [sys.executable, "-m", "tests.hub_standin", str(folder)]
    return ChildServer(argv + ([token] if token else []), log)
