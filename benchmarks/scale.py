"""Search and resolve latency (p50/p95) at 1,000 and 100,000 versions, SQLite and PostgreSQL.

    python benchmarks/scale.py [--postgres postgresql://postgres@127.0.0.1:5432/test]

Catalog rows are bulk-inserted (what matters here is the query plans, not publishing), then
each query runs against both sizes in this one run. Target (DESIGN.md): p95 at 100,000 within
2x of p95 at 1,000: indexes, no table scans, no N+1 queries.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from registry.catalog import queries  # noqa: E402
from registry.catalog.db import make_engine, session_factory, upgrade  # noqa: E402
from registry.catalog.models import Adapter, Alias, Namespace, Version, VersionTarget  # noqa: E402
from registry.manifest import FileEntry, Manifest  # noqa: E402
from registry.schemas import SearchQuery  # noqa: E402

VERSIONS_PER_ADAPTER = 100
MANIFEST = Manifest.of(
    [FileEntry(path="adapter_model.safetensors", digest="sha256:" + "ab" * 32, size=1)]
)


def fill(url: str, versions: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    adapters = versions // VERSIONS_PER_ADAPTER
    with engine.begin() as conn:
        conn.execute(insert(Namespace), [{"id": 1, "name": "default"}])
        conn.execute(
            insert(Adapter),
            [{"id": a + 1, "namespace_id": 1, "name": f"role-{a:06d}"} for a in range(adapters)],
        )
        rows, targets = [], []
        for a in range(adapters):
            for v in range(VERSIONS_PER_ADAPTER):
                vid = a * VERSIONS_PER_ADAPTER + v + 1
                rows.append(
                    {
                        "id": vid,
                        "adapter_id": a + 1,
                        "version": f"1.{v // 10}.{v % 10}",
                        "major": 1,
                        "minor": v // 10,
                        "patch": v % 10,
                        "prerelease": False,
                        "digest": "sha256:" + uuid.uuid4().hex * 2,
                        "manifest": MANIFEST.canonical(),
                        "base_model": f"org/base-{a % 7}",
                        "r": 8 if a % 2 else 16,
                        "info": {"target_modules": ["q_proj", "v_proj"]},
                        "yanked": v % 17 == 0,
                        "published_by": "bench",
                    }
                )
                targets += [
                    {"version_id": vid, "module": "q_proj"},
                    {"version_id": vid, "module": "v_proj"},
                ]
        for start in range(0, len(rows), 5000):
            conn.execute(insert(Version), rows[start : start + 5000])
            conn.execute(insert(VersionTarget), targets[2 * start : 2 * start + 10000])
        conn.execute(
            insert(Alias),
            [
                {
                    "adapter_id": a + 1,
                    "name": "prod",
                    "version_id": a * VERSIONS_PER_ADAPTER + 50,
                    "updated_by": "bench",
                }
                for a in range(adapters)
            ],
        )
        # What the service keeps on publish; bulk rows bypass it, so set it the migrations' way.
        conn.execute(
            text(
                "UPDATE adapters SET latest_version_id = (SELECT v.id FROM versions v "
                "WHERE v.adapter_id = adapters.id AND NOT v.yanked AND NOT v.prerelease "
                "ORDER BY v.major DESC, v.minor DESC, v.patch DESC LIMIT 1)"
            )
        )
        conn.execute(
            text(
                "UPDATE adapters SET latest_base_model = (SELECT v.base_model FROM versions v "
                "WHERE v.id = adapters.latest_version_id), latest_r = (SELECT v.r FROM versions v "
                "WHERE v.id = adapters.latest_version_id)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO adapter_targets (adapter_id, module) SELECT a.id, vt.module "
                "FROM adapters a JOIN version_targets vt ON vt.version_id = a.latest_version_id"
            )
        )
    # A catalog that has lived has planner statistics and, on PostgreSQL, a visibility map
    # (autovacuum vacuums and analyses a table after bulk inserts; SQLite's statistics come
    # from ANALYZE / PRAGMA optimize): without them, sequential scans and heap fetches.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
    engine.dispose()


def percentiles(fn: Callable[[int], object], calls: int) -> tuple[float, float]:
    for i in range(20):
        fn(i)
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(0.95 * len(samples))] * 1000


def measure(url: str, adapters: int, calls: int) -> dict[str, tuple[float, float]]:
    engine = make_engine(url)
    sessions = session_factory(engine)
    out = {}
    with sessions() as s:
        checks: dict[str, Callable[[int], object]] = {
            "resolve latest": lambda i: queries.resolve_spec(s, f"role-{i % adapters:06d}"),
            "resolve alias": lambda i: queries.resolve_spec(s, f"role-{i % adapters:06d}@prod"),
            "resolve ^1.3": lambda i: queries.resolve_spec(s, f"role-{i % adapters:06d}@^1.3"),
            "resolve exact": lambda i: queries.resolve_spec(s, f"role-{i % adapters:06d}@1.4.2"),
            "search first page": lambda i: queries.search(s, SearchQuery(limit=50)),
            "search text": lambda i: queries.search(
                s, SearchQuery(text=f"role-{i % adapters:04d}"[:9])
            ),
            "search filters": lambda i: queries.search(
                s, SearchQuery(base_model="org/base-3", rank=8, target="q_proj", limit=20)
            ),
        }
        for name, fn in checks.items():
            out[name] = percentiles(fn, calls)
    engine.dispose()
    return out


def backend(name: str, make_url: Callable[[str], str], calls: int) -> None:
    results = {}
    for versions in (1_000, 100_000):
        url = make_url(f"scale_{versions}")
        start = time.perf_counter()
        fill(url, versions)
        print(f"{name}: {versions:,} versions loaded in {time.perf_counter() - start:.0f} s")
        results[versions] = measure(url, versions // VERSIONS_PER_ADAPTER, calls)
    print(f"\n{name}, {calls} calls each      p50@1k   p95@1k  p50@100k  p95@100k  p95 ratio")
    for check in results[1_000]:
        small, big = results[1_000][check], results[100_000][check]
        print(
            f"  {check:22s} {small[0]:7.2f}  {small[1]:7.2f}  {big[0]:8.2f}  {big[1]:8.2f}"
            f"  {big[1] / small[1]:8.2f}x"
        )
    print("  (milliseconds; target: p95 ratio <= 2x)\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backend("SQLite", lambda name: f"sqlite:///{tmp}/{name}.db", args.calls)
    server, created = args.postgres.rsplit("/", 1)[0], []

    def pg(name: str) -> str:
        db = f"{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        created.append(db)
        return f"{server}/{db}"

    try:
        backend("PostgreSQL", pg, args.calls)
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            for db in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
