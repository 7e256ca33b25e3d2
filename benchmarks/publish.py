"""Publish throughput: versions per second, in process and over HTTP, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/publish.py [--versions N] [--backends sqlite,postgresql]

Each row publishes ``--versions`` new versions of one small adapter (rank 8 on q/v, 4 layers,
the same weights with a new version number each time, so blobs are deduplicated as they are
for a team re-publishing a config change), one after another from one client:

- in process: ``EmbeddedRegistry.publish`` (inspect, stage blobs, catalog transaction);
- over HTTP:  ``RemoteRegistry.publish`` against ``stance serve`` on loopback (HEAD per blob,
              uploads of missing ones, commit; the server inspects again).

No target: the figures (versions/s, median and p99 latency per publish) are for the README.
PostgreSQL rows need the server at 127.0.0.1:5432 (user postgres); a database is created and
dropped for the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from harness import Server  # noqa: E402
from synthetic import random_factors, write_adapter  # noqa: E402

STANCE = Path(sys.executable).with_name("stance")
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def catalog_url(backend: str, work: Path) -> Iterator[str]:
    """A fresh catalog: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{work / f'catalog-{uuid.uuid4().hex[:8]}.db'}"
        return
    import psycopg

    name = f"stance_bench_publish_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(publish: Callable[[str], object], count: int) -> list[float]:
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        publish(f"bench-publish@1.0.{i}")
        latencies.append(time.perf_counter() - start)
    return latencies


def run_backend(backend: str, folder: Path, work: Path, count: int) -> dict[str, list[float]]:
    from registry.embedded import EmbeddedRegistry
    from registry.remote import RemoteRegistry
    from registry.settings import Settings

    out = {}
    with catalog_url(backend, work) as url:
        home = work / f"home-{backend}"
        settings = Settings(home=home, database_url=url)
        with EmbeddedRegistry(settings) as registry:
            registry.publish(folder, "warm-up@0.0.1")
            out["in process"] = timed(lambda t: registry.publish(folder, t), count)
            token = registry.create_token("publish").token
        server = Server(
            "stance serve",
            1,
            True,
            [str(STANCE), "serve", "--no-access-log"],
            {"STANCE_HOME": str(home), "STANCE_DATABASE_URL": url},
            ROOT,
            "/v1/health",
            "",
            work / f"serve-{backend}.log",
        )
        try:
            server.start()
            server.wait_ready()
            with RemoteRegistry(server.base, token=token, settings=settings) as remote:
                remote.publish(folder, "warm-up-http@0.0.1")
                publish = lambda t: remote.publish(folder, t.replace("bench", "http"))  # noqa: E731
                out["over HTTP"] = timed(publish, count)
        finally:
            server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100, help="versions per row")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    if not 1 <= args.versions <= 10_000:
        parser.error("1 <= --versions <= 10000")
    with tempfile.TemporaryDirectory(prefix="stance-bench-publish-") as tmp:
        work = Path(tmp)
        factors = random_factors(np.random.default_rng(0), d_in=256)
        folder = write_adapter(
            work / "adapter", factors, layers=4, widths={"q_proj": 256, "v_proj": 256}
        )
        print(f"{'backend':<12} {'path':<12} {'versions/s':>11} {'p50 ms':>8} {'p99 ms':>8}")
        for backend in args.backends.split(","):
            for path, latencies in run_backend(backend, folder, work, args.versions).items():
                latencies.sort()
                p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
                print(
                    f"{backend:<12} {path:<12} {len(latencies) / sum(latencies):11.1f} "
                    f"{statistics.median(latencies) * 1e3:8.1f} {p99 * 1e3:8.1f}"
                )
    print("one client, one publish at a time; the machine is shared: figures, not targets")


if __name__ == "__main__":
    main()
