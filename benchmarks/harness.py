"""What the HTTP benchmarks share: servers in their own process groups, and one load generator.

``Server`` starts a command on a free loopback port in a session of its own, waits for its
health check (bounded), and stops the whole group (SIGTERM, then SIGKILL) on every path.
``load`` drives a URL with ``wrk`` (fixed threads, connections, duration, ``--latency``) or,
where wrk is missing, a bounded httpx generator in a second process (``python harness.py
--python-load URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 120.0  # a server that is not answering by then is reported as failed
STOP_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S, SETTLED_CPU_PER_S = 60.0, 0.1  # idle: under a tenth of a core for a second
MAX_PY_REQUESTS = 5_000_000  # the Python generator's count bound, beside its time bound


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    label: str
    workers: int
    default: bool  # the server's own default worker count (nothing passed)
    command: list[str]
    env: dict[str, str]
    cwd: Path
    health_path: str
    resolve_path: str
    log: Path
    port: int = field(default_factory=free_port)
    listen_args: bool = True  # append --host 127.0.0.1 --port N (nginx takes them in its config)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + self.resolve_path

    def start(self) -> None:
        listen = ["--host", "127.0.0.1", "--port", str(self.port)] if self.listen_args else []
        command = [*self.command, *listen]
        with self.log.open("wb") as log:
            # A session of its own: stop() ends this server and its workers by their group id.
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if get(self.base + self.health_path, timeout=2.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.label} ({self.workers} workers) did not start:\n{tail}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by this server's process group (its workers and helpers)."""
        assert self.process is not None
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[2]) == self.process.pid:  # pgrp: the session start() created
                total += int(fields[11]) + int(fields[12])  # utime + stime, in ticks
        return total / os.sysconf("SC_CLK_TCK")

    def settle(self) -> None:
        """Wait (bounded) until the server idles: MLflow starts job consumers after it answers."""
        if not Path("/proc/self/stat").exists():
            time.sleep(SETTLE_TIMEOUT_S / 4)
            return
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        before = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            after = self.cpu_seconds()
            if after - before < SETTLED_CPU_PER_S:
                return
            before = after
        print(f"warning: {self.label} still busy after {SETTLE_TIMEOUT_S:g}s idle wait")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL to what is left after a grace period."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)  # the group start() created, by its id
            except ProcessLookupError:
                break
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline:
                process.poll()  # reap the leader; its workers are reaped by their parents
                try:
                    os.killpg(process.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)
        process.poll()


def versions(python: Path, names: tuple[str, ...]) -> str:
    code = (
        "import importlib.metadata as m, sys\n"
        "print(' '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))"
    )
    done = subprocess.run(
        [str(python), "-c", code, *names], capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip() or done.stderr.strip()[-200:]


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    bytes_per_s: float = 0.0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> Sample:
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _duration_ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _duration_ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out):
        errors += int(found.group(1))
    if found := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(n) for n in found.groups())
    moved = re.search(r"Transfer/sec:\s*([\d.]+)([KMG]?)B", out)
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
    rate = float(moved.group(1)) * scale[moved.group(2)] if moved else 0.0
    return Sample(rps, p50, p99, total, errors, rate)


async def _python_load(url: str, connections: int, duration: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = received = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors, received
            while time.perf_counter() < deadline and len(latencies) < MAX_PY_REQUESTS:
                start = time.perf_counter()
                try:
                    response = await client.get(url)
                    ok = response.status_code < 400
                    received += len(response.content)
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "requests": len(latencies),
        "errors": errors,
        "bytes_per_s": received / elapsed,
    }


def load(
    url: str, args: argparse.Namespace, duration: int, connections: int = 0, timeout: int = 0
) -> Sample:
    """One bounded measurement of ``url`` with the chosen generator, in a second process.

    ``args`` carries ``generator`` ("wrk" or "python"), ``connections`` and ``threads``;
    ``timeout`` (seconds) replaces wrk's 2 s per request, too short for a large download on a
    loaded machine (the Python generator allows 10 s).
    """
    limit = duration + 60
    connections = connections or args.connections
    if args.generator == "wrk":
        threads = min(args.threads, connections)
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s"]
        if timeout:
            command.append(f"--timeout={timeout}s")
        done = subprocess.run(
            [*command, "--latency", url], capture_output=True, text=True, timeout=limit
        )
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
        return parse_wrk(done.stdout)
    command = [sys.executable, __file__, "--python-load", url, f"--connections={connections}"]
    done = subprocess.run(
        [*command, f"--duration={duration}"], capture_output=True, text=True, timeout=limit
    )
    if done.returncode != 0:
        raise RuntimeError(f"python load generator failed: {done.stderr[-2000:]}")
    return Sample(**json.loads(done.stdout))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the fallback load generator's process")
    parser.add_argument("--python-load", metavar="URL", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10)
    options = parser.parse_args()
    result = asyncio.run(_python_load(options.python_load, options.connections, options.duration))
    print(json.dumps(result))
