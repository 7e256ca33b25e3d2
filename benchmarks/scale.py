"""Search, resolve and adapter-page latency (p50/p95) at growing catalogs, SQLite and PostgreSQL.

    python benchmarks/scale.py [--sizes 1000,1000000] [--per-adapter 20] [--explain]
                               [--postgres postgresql://postgres@127.0.0.1:5432/test]

Catalog rows are bulk-inserted in chunks (what matters here is the query plans, not
publishing), then each query runs against every size in this one run, the sizes taking turns
a few calls at a time (so that a shared machine's load weighs on all alike). Target (issue 19):
p95 at 1,000,000 versions across 50,000 adapters within 2x of p95 at 1,000: indexes or keyset
pages, no table scans, no N+1 queries. ``--explain`` prints the search plans at the largest
size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from registry.catalog import queries  # noqa: E402
from registry.catalog.db import make_engine, session_factory, upgrade  # noqa: E402
from registry.catalog.models import (  # noqa: E402
    Adapter,
    AdapterSuffix,
    Alias,
    Namespace,
    Version,
    VersionTarget,
    name_suffixes,
)
from registry.manifest import FileEntry, Manifest  # noqa: E402
from registry.schemas import SearchQuery  # noqa: E402

FILTERS = SearchQuery(base_model="org/base-3", rank=8, target="q_proj", limit=20)

CHUNK_ADAPTERS = 1000
MANIFEST = Manifest.of(
    [FileEntry(path="adapter_model.safetensors", digest="sha256:" + "ab" * 32, size=1)]
)


def _version(v: int) -> tuple[int, int]:
    """The v-th version of an adapter: 1.0.0, 1.0.1, 1.0.2, 1.0.3, 1.1.0, ... (minor, patch)."""
    return v // 4, v % 4


def _rows(first: int, last: int, per: int) -> tuple[list[dict], list[dict]]:
    rows, targets = [], []
    for a in range(first, last):
        for v in range(per):
            vid = a * per + v + 1
            minor, patch = _version(v)
            rows.append(
                {
                    "id": vid,
                    "adapter_id": a + 1,
                    "version": f"1.{minor}.{patch}",
                    "major": 1,
                    "minor": minor,
                    "patch": patch,
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
    return rows, targets


def fill(url: str, versions: int, per: int) -> None:
    """``versions`` rows over ``versions // per`` adapters, inserted a chunk at a time."""
    engine = make_engine(url)
    upgrade(engine)
    adapters = versions // per
    with engine.begin() as conn:
        conn.execute(insert(Namespace), [{"id": 1, "name": "default"}])
        conn.execute(
            insert(Adapter),
            [
                {
                    "id": a + 1,
                    "namespace_id": 1,
                    "name": f"role-{a:06d}",
                    "ref": f"default/role-{a:06d}",
                }
                for a in range(adapters)
            ],
        )
        conn.execute(
            insert(AdapterSuffix),
            [
                {"adapter_id": a + 1, "suffix": suffix}
                for a in range(adapters)
                for suffix in name_suffixes(f"role-{a:06d}")
            ],
        )
        for first in range(0, adapters, CHUNK_ADAPTERS):
            rows, targets = _rows(first, min(adapters, first + CHUNK_ADAPTERS), per)
            conn.execute(insert(Version), rows)
            conn.execute(insert(VersionTarget), targets)
        conn.execute(
            insert(Alias),
            [
                {
                    "adapter_id": a + 1,
                    "name": "prod",
                    "version_id": a * per + per // 2,
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


ROUND = 10  # calls per size in turn


def _checks(s: Session, adapters: int) -> dict[str, Callable[[int], object]]:
    return {
        "resolve latest": lambda i: queries.resolve_spec(s, f"role-{i % adapters:06d}"),
        "resolve alias": lambda i: queries.resolve_spec(s, f"role-{i % adapters:06d}@prod"),
        "resolve ^1.3": lambda i: queries.resolve_spec(s, f"role-{i % adapters:06d}@^1.3"),
        "resolve exact": lambda i: queries.resolve_spec(s, f"role-{i % adapters:06d}@1.4.2"),
        "search first page": lambda i: queries.search(s, SearchQuery(limit=50)),
        # Texts that match as much at every size (a full page; one adapter): a text that
        # matched nothing at 1,000 and a page at 1,000,000 compared two different answers.
        "search text, full page": lambda i: queries.search(
            s, SearchQuery(text=f"role-{i % adapters:06d}"[:-2])
        ),
        "search text, 1 hit": lambda i: queries.search(s, SearchQuery(text=f"{i % adapters:06d}")),
        "search filters": lambda i: queries.search(s, FILTERS),
        "adapter page": lambda i: queries.adapter_detail(s, f"role-{i % adapters:06d}"),
    }


def measure(
    urls: dict[int, str], per: int, calls: int
) -> dict[int, dict[str, tuple[float, float]]]:
    """(p50, p95) in milliseconds of each check at each size. The sizes take turns, ROUND calls
    at a time: on a shared machine the load then weighs on every size alike, where measuring
    one size minutes after the other compared two different loads."""
    engines = {n: make_engine(url) for n, url in urls.items()}
    out: dict[int, dict[str, tuple[float, float]]] = {n: {} for n in urls}
    with ExitStack() as stack:
        checks = {
            n: _checks(stack.enter_context(session_factory(engine)()), n // per)
            for n, engine in engines.items()
        }
        for name in checks[min(urls)]:
            samples: dict[int, list[float]] = {n: [] for n in urls}
            for n in urls:
                for i in range(20):
                    checks[n][name](i)
            for first in range(0, calls, ROUND):
                for n in urls:
                    for i in range(first, min(calls, first + ROUND)):
                        start = time.perf_counter()
                        checks[n][name](i)
                        samples[n].append(time.perf_counter() - start)
            for n, taken in samples.items():
                taken.sort()
                out[n][name] = (
                    statistics.median(taken) * 1000,
                    taken[int(0.95 * len(taken))] * 1000,
                )
    for engine in engines.values():
        engine.dispose()
    return out


def explain(url: str) -> None:
    """The plans of the search queries, as the database prints them."""
    engine = make_engine(url)
    prefix = "EXPLAIN" if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
    with session_factory(engine)() as s:
        for label, filters in (
            ("first page", SearchQuery(limit=50)),
            ("text", SearchQuery(text="role-0299")),
            ("text, 1 hit", SearchQuery(text="012345")),
            ("filters", FILTERS),
        ):
            statement = queries.search_statement(filters)
            sql = statement.compile(engine, compile_kwargs={"literal_binds": True})
            print(f"  plan of search {label}:")
            for row in s.execute(text(f"{prefix} {sql}")):
                print("    " + " ".join(str(c) for c in row))
    engine.dispose()


def backend(
    name: str,
    make_url: Callable[[str], str],
    *,
    sizes: list[int],
    per: int,
    calls: int,
    plans: bool,
) -> None:
    urls = {}
    for versions in sizes:
        urls[versions] = make_url(f"scale_{versions}")
        start = time.perf_counter()
        fill(urls[versions], versions, per)
        elapsed = time.perf_counter() - start
        adapters = versions // per
        print(f"{name}: {versions:,} versions ({adapters:,} adapters) loaded in {elapsed:.0f} s")
    if plans:
        explain(urls[sizes[-1]])
    results = measure(urls, per, calls)
    small_n, big_n = sizes[0], sizes[-1]
    print(
        f"\n{name}, {calls} calls each   p50@{small_n:,}  p95@{small_n:,}  p50@{big_n:,}  "
        f"p95@{big_n:,}  p95 ratio"
    )
    for check in results[small_n]:
        small, big = results[small_n][check], results[big_n][check]
        print(
            f"  {check:22s} {small[0]:7.2f}  {small[1]:7.2f}  {big[0]:8.2f}  {big[1]:8.2f}"
            f"  {big[1] / small[1]:8.2f}x"
        )
    print("  (milliseconds; target: p95 ratio <= 2x)\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--sizes", default="1000,1000000", help="versions, smallest first")
    parser.add_argument("--per-adapter", type=int, default=20, help="versions per adapter")
    parser.add_argument("--explain", action="store_true", help="print the search plans")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.sizes.split(","))
    if args.per_adapter < 19:
        parser.error("--per-adapter must be at least 19 (the checks resolve 1.4.2 and ^1.3)")
    options = {"sizes": sizes, "per": args.per_adapter, "calls": args.calls, "plans": args.explain}
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            backend("SQLite", lambda name: f"sqlite:///{tmp}/{name}.db", **options)
    if "postgresql" not in args.backends:
        return
    server, created = args.postgres.rsplit("/", 1)[0], []

    def pg(name: str) -> str:
        db = f"{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        created.append(db)
        return f"{server}/{db}"

    try:
        backend("PostgreSQL", pg, **options)
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            for db in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
