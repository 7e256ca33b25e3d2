"""CLI start-up: ``stance --help`` and ``stance resolve`` next to ``hf --help``, in one run.

    python benchmarks/cli.py [--repeat N]

Rows: ``stance --help``; ``stance resolve NAME@prod --json`` on the embedded registry (SQLite
under a temp home); the same over HTTP to a ``stance serve`` on loopback; and the baseline,
huggingface_hub's ``hf --help``, installed in the same virtualenv. The commands run in turn,
round after round, so the machine's noise (it is shared) falls on all of them alike; each
figure is the median wall time of N runs, plus the median CPU time (user + sys of the child)
that contention inflates less. Target (issue 16): embedded ``stance resolve`` at or under
0.3 s wall and at most a quarter of ``hf --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import random_factors, write_adapter  # noqa: E402

BIN = Path(sys.executable).parent
STANCE, HF = str(BIN / "stance"), str(BIN / "hf")
TARGET_S, TARGET_RATIO = 0.3, 0.25


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run (the command must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, timeout=120)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed: {done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(env: dict[str, str]) -> Iterator[str]:
    """A ``stance serve`` on loopback, stopped on every path."""
    port = _free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        [STANCE, "serve", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"stance serve did not start: {log.read().decode()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _publish(home: Path) -> None:
    """One adapter with a prod alias, published in-process (not part of what is timed)."""
    import numpy as np

    from registry.embedded import EmbeddedRegistry
    from registry.settings import Settings

    folder = write_adapter(home / "adapter", random_factors(np.random.default_rng(0)), layers=4)
    with EmbeddedRegistry(Settings(home=home)) as registry:
        registry.publish(folder, "bench-role@1.0.0", alias="prod")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs of each command")
    options = parser.parse_args()
    if not Path(HF).exists():
        sys.exit(f"{HF} is missing: pip install huggingface_hub (it ships the hf command)")
    home = Path(tempfile.mkdtemp(prefix="stance-cli-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANCE_")}
    env.update({"STANCE_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})
    try:
        _publish(home)
        with _server(env) as url:
            rows = {
                "hf --help (baseline)": ([HF, "--help"], env),
                "stance --help": ([STANCE, "--help"], env),
                "stance resolve (embedded)": (
                    [STANCE, "resolve", "bench-role@prod", "--json"],
                    env,
                ),
                "stance resolve (HTTP)": (
                    [STANCE, "resolve", "bench-role@prod", "--json"],
                    {**env, "STANCE_REGISTRY": url},
                ),
            }
            for command, row_env in rows.values():  # warm the page cache once
                _run(command, row_env)
            walls: dict[str, list[float]] = {name: [] for name in rows}
            cpus: dict[str, list[float]] = {name: [] for name in rows}
            for _ in range(options.repeat):
                for name, (command, row_env) in rows.items():
                    wall, cpu = _run(command, row_env)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    _report(walls, cpus, options.repeat)


def _report(walls: dict[str, list[float]], cpus: dict[str, list[float]], repeat: int) -> None:
    base_wall = statistics.median(walls["hf --help (baseline)"])
    base_cpu = statistics.median(cpus["hf --help (baseline)"])
    print(f"median of {repeat} runs each, interleaved; load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':28} {'wall s':>8} {'/ hf':>6} {'cpu s':>8} {'/ hf':>6}")
    for name in walls:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name:28} {wall:8.3f} {wall / base_wall:6.2f} {cpu:8.3f} {cpu / base_cpu:6.2f}")
    embedded = statistics.median(walls["stance resolve (embedded)"])
    ratio = embedded / base_wall
    verdict = "met" if embedded <= TARGET_S and ratio <= TARGET_RATIO else "NOT met"
    print(
        f"target: embedded resolve <= {TARGET_S} s and <= {TARGET_RATIO:.2f} x hf --help: "
        f"{embedded:.3f} s, {ratio:.2f} x -> {verdict}"
    )


if __name__ == "__main__":
    main()
