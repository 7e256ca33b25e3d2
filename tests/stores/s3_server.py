"""A real S3 HTTP endpoint on loopback: moto's server in a child process, for tests and benchmarks.

The child binds port 0, prints the port it got and serves until its stdin closes, so start-up
and shut-down need neither a guessed port nor a sleep.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType

_SERVE = """
import sys
from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


class MotoServer:
    """``with MotoServer(log) as s3: s3.endpoint`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.endpoint = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> MotoServer:
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SERVE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self._process.stdout is not None
        port = self._process.stdout.readline().strip()
        if not port.isdigit():
            self._process.kill()
            self._process.wait()
            raise RuntimeError(f"moto server did not start: {self.log.read_text()[-2000:]}")
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
