"""Soak: `stance serve --workers N` under a resolve + download mix; its memory must stay flat.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--workers 2] [--threads 8] [--json]

A few synthetic adapters (SmolLM2-135M's q/v shapes, written with numpy) are published into a
temporary home (SQLite catalog, local store), then `stance serve --workers N` runs in a process
group of its own (stopped on every path) and threads with one httpx client each drive it over
loopback: resolve a spec (exact, range, alias, latest, in turn), then download the weights blob
it names and hash it (a wrong byte is an error, like a non-200 or a dropped connection). Every
``--interval`` seconds the resident memory of every server process (the supervisor and its
workers, by psutil) is sampled.

It prints the samples, the requests served and the errors, and the ratio of the final to the
initial total RSS, where "initial" is the first sample after ``--warmup`` seconds of load (caches,
pools and allocator arenas fill first; what matters is that nothing grows after). The run is
bounded in time (``--minutes``) and in count (``--max-requests``). The suite runs a 10-second
version (tests/reliability/test_soak.py) and asserts no errors and bounded growth; a real soak
is the 10-minute default.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from harness import Server  # noqa: E402
from synthetic import LAYERS, random_factors, write_adapter  # noqa: E402

STANCE = Path(sys.executable).with_name("stance")
NAME = "soak-role"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
SPECS = (f"{NAME}@1.0.0", f"{NAME}@^1.1", f"{NAME}@prod", NAME)
MiB = 1024 * 1024
RECONNECT = 20  # rounds (a resolve and a download) per connection


def environment(home: Path) -> dict[str, str]:
    """The catalog and store under ``home``, whatever the caller's environment names."""
    return {
        "STANCE_HOME": str(home),
        "STANCE_DATABASE_URL": f"sqlite:///{home / 'catalog.db'}",
        "STANCE_STORE": (home / "blobs").as_uri(),
        "STANCE_REGISTRY": "",
    }


def seed(home: Path, work: Path, layers: int = LAYERS) -> None:
    """Three releases of one adapter, each its own weights; ``prod`` on the middle one."""
    from registry.embedded import EmbeddedRegistry
    from registry.settings import Settings

    env = environment(home)
    settings = Settings(
        home=home, database_url=env["STANCE_DATABASE_URL"], store=env["STANCE_STORE"]
    )
    with EmbeddedRegistry(settings) as registry:
        for index, version in enumerate(VERSIONS):
            factors = random_factors(np.random.default_rng(index))
            folder = write_adapter(work / version, factors, layers=layers)
            registry.publish(folder, f"{NAME}@{version}")
        registry.set_alias(NAME, "prod", VERSIONS[1])


@dataclass
class Tally:
    """What the load threads did; one lock, taken once per request."""

    requests: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, error: str | None) -> None:
        with self.lock:
            self.requests += 1
            if error is not None:
                self.errors += 1
                if len(self.first_errors) < 5:
                    self.first_errors.append(error)


def _one(client: httpx.Client, spec: str) -> tuple[str | None, str | None]:
    """Resolve ``spec``; the weights blob's digest, or what went wrong."""
    response = client.get("/v1/resolve", params={"spec": spec})
    if response.status_code != 200:
        return None, f"resolve {spec}: {response.status_code} {response.text[:200]}"
    files = {f["path"]: f["digest"] for f in response.json()["files"]}
    return files["adapter_model.safetensors"], None


def _download(client: httpx.Client, digest: str) -> str | None:
    hasher = hashlib.sha256()
    with client.stream("GET", f"/v1/blobs/{digest}") as response:
        if response.status_code != 200:
            return f"download {digest}: {response.status_code}"
        for chunk in response.iter_bytes(MiB):
            hasher.update(chunk)
    actual = "sha256:" + hasher.hexdigest()
    return None if actual == digest else f"download {digest}: bytes hash to {actual}"


def drive(base: str, tally: Tally, stop: threading.Event, max_requests: int) -> None:
    """One load thread: resolve, then download what it named, until told to stop.

    A new connection every ``RECONNECT`` rounds: keep-alive connections opened at once would
    all land on the first worker to accept, and connection churn is part of a soak.
    """
    while not stop.is_set() and tally.requests < max_requests:
        with httpx.Client(base_url=base, timeout=30) as client:
            for spec in itertools.islice(itertools.cycle(SPECS), RECONNECT):
                if stop.is_set() or tally.requests >= max_requests:
                    return
                try:
                    digest, error = _one(client, spec)
                    tally.add(error)
                    if digest is not None:
                        tally.add(_download(client, digest))
                except httpx.HTTPError as exc:
                    tally.add(f"{spec}: {exc!r}")


def measure(server: Server) -> dict:
    """Resident memory and CPU time of the server and each of its child processes, supervisor
    first (the CPU column shows whether every worker takes its share of the load)."""
    assert server.process is not None
    root = psutil.Process(server.process.pid)
    sizes, cpu = [], []
    for process in [root, *root.children(recursive=True)]:
        try:
            with process.oneshot():
                sizes.append(process.memory_info().rss)
                times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue  # a worker restarting between the listing and the read
        cpu.append(round(times.user + times.system, 1))
    return {
        "rss_mb": [round(size / MiB, 1) for size in sizes],
        "total_mb": round(sum(sizes) / MiB, 1),
        "cpu_s": cpu,
    }


def soak(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="stance-soak-") as tmp:
        work = Path(tmp)
        seed(work / "home", work, args.layers)
        server = Server(
            label="stance",
            workers=args.workers,
            default=False,
            command=[str(STANCE), "serve", "--workers", str(args.workers)],
            env=environment(work / "home"),
            cwd=ROOT,
            health_path="/v1/health",
            resolve_path=f"/v1/resolve?spec={NAME}",
            log=work / "server.log",
        )
        tally, stop = Tally(), threading.Event()
        threads = [
            threading.Thread(target=drive, args=(server.base, tally, stop, args.max_requests))
            for _ in range(args.threads)
        ]
        samples: list[dict] = []
        try:
            started = time.monotonic()
            server.start()
            server.wait_ready()
            startup = time.monotonic() - started
            for thread in threads:
                thread.start()
            began = time.monotonic()
            deadline = began + args.minutes * 60
            next_sample = began + min(args.warmup, args.minutes * 60 / 2)
            while time.monotonic() < deadline and any(t.is_alive() for t in threads):
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= next_sample:
                    at = round(time.monotonic() - began, 1)
                    samples.append({"t": at, "requests": tally.requests, **measure(server)})
                    next_sample += args.interval
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            seconds = time.monotonic() - began
            samples.append({"t": round(seconds, 1), "requests": tally.requests, **measure(server)})
        finally:
            stop.set()
            stopping = time.monotonic()
            server.stop()
            shutdown = time.monotonic() - stopping
    initial, final = samples[0]["total_mb"], samples[-1]["total_mb"]
    return {
        "workers": args.workers,
        "threads": args.threads,
        "seconds": round(seconds, 1),
        "startup_s": round(startup, 1),
        "shutdown_s": round(shutdown, 1),
        "requests": tally.requests,
        "requests_per_s": round(tally.requests / seconds, 1),
        "errors": tally.errors,
        "first_errors": tally.first_errors,
        "processes": len(samples[-1]["rss_mb"]),
        "samples": samples,
        "rss_initial_mb": initial,
        "rss_final_mb": final,
        "rss_ratio": round(final / initial, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to soak")
    parser.add_argument("--workers", type=int, default=2, help="`stance serve --workers`")
    parser.add_argument("--threads", type=int, default=8, help="load threads (one client each)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="load before the first sample")
    parser.add_argument("--layers", type=int, default=LAYERS, help="adapter layers (30: SmolLM2)")
    parser.add_argument("--max-requests", type=int, default=5_000_000, help="count bound")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    result = soak(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"stance serve --workers {result['workers']}, {result['threads']} load threads")
    print(f"{'t (s)':>8} {'requests':>10} {'total RSS (MiB)':>16}  per process: MiB (CPU s)")
    for sample in result["samples"]:
        per = " ".join(
            f"{mb:.1f} ({cpu:.1f})"
            for mb, cpu in zip(sample["rss_mb"], sample["cpu_s"], strict=True)
        )
        print(f"{sample['t']:>8.1f} {sample['requests']:>10} {sample['total_mb']:>16.1f}  {per}")
    print(
        f"requests {result['requests']} ({result['requests_per_s']}/s), errors {result['errors']}"
        f", RSS final/initial {result['rss_ratio']} "
        f"({result['rss_final_mb']} / {result['rss_initial_mb']} MiB)"
    )
    for error in result["first_errors"]:
        print(f"  error: {error}")


if __name__ == "__main__":
    main()
