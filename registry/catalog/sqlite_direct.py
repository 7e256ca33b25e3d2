"""Resolve a spec on a bare stdlib ``sqlite3`` connection: the fast path on SQLite catalogs.

Two callers, one lookup. ``stance resolve`` (``resolve(url, spec)``): importing SQLAlchemy and
pydantic costs ~0.5 s, ten times the query, and a CLI resolve has 0.3 s in all (issue 16).
``stance serve`` (``Reader``): a pooled SQLAlchemy connection and a pydantic ``Resolution``
cost ten times the query too, on the API's hottest route (issue 19).

This module answers the common case only: a catalog at ``HEAD_REVISION`` and a spec that
selects a version. Anything else (another database, an older schema, not found, a digest
naming several versions, a busy database) returns None and the caller takes the full path
(``queries.resolve_spec``), which owns the errors and their messages.

The SQL is the very text SQLAlchemy compiles from ``queries._RESOLUTIONS`` for SQLite, and
``Resolved.to_json`` is ``Resolution.model_dump_json`` byte for byte: ``tests/test_cli_startup.py``
and ``tests/api/test_resolve_hot_path.py`` compare them, so the paths cannot drift apart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from registry.catalog.revision import HEAD_REVISION
from registry.spec import SelectorKind, Spec, parse_spec, select

A = TypeVar("A")
R = TypeVar("R")

_COLUMNS = (
    "SELECT versions.version, versions.digest, versions.yanked, versions.yanked_reason, "
    "versions.base_model, versions.manifest, versions.hub_repo, versions.hub_revision \n"
)
_IN_ADAPTER = (
    "FROM versions JOIN adapters ON adapters.id = versions.adapter_id "
    "JOIN namespaces ON namespaces.id = adapters.namespace_id \n"
    "WHERE namespaces.name = :namespace AND adapters.name = :name AND "
)
SQL: dict[SelectorKind, str] = {
    SelectorKind.LATEST: _COLUMNS + _IN_ADAPTER + "versions.id = adapters.latest_version_id",
    SelectorKind.EXACT: _COLUMNS + _IN_ADAPTER + "versions.version = :selector",
    SelectorKind.RANGE: "SELECT versions.version \n" + _IN_ADAPTER + "versions.yanked = 0",
    SelectorKind.DIGEST: _COLUMNS + _IN_ADAPTER + "versions.digest = :selector",
    SelectorKind.ALIAS: _COLUMNS
    + "FROM versions \nWHERE versions.id = (SELECT aliases.version_id \n"
    "FROM aliases JOIN adapters ON adapters.id = aliases.adapter_id "
    "JOIN namespaces ON namespaces.id = adapters.namespace_id \n"
    "WHERE namespaces.name = :namespace AND adapters.name = :name AND "
    "aliases.name = :selector)",
}
BLOB_SIZE_SQL = "SELECT blobs.size FROM blobs WHERE blobs.digest = ?"
# pydantic's JSON: compact, non-ASCII as UTF-8, the same escapes (json's C encoder).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


@dataclass(frozen=True)
class Resolved:
    """A version as ``schemas.Resolution`` describes it, its files still in manifest JSON."""

    namespace: str
    name: str
    version: str
    digest: str
    yanked: bool
    yanked_reason: str | None
    base_model: str | None
    manifest: str  # the stored canonical manifest: {"files": [{"digest", "path", "size"}]}
    hub_repo: str | None
    hub_revision: str | None

    @classmethod
    def of_row(cls, spec: Spec, row: Sequence[Any]) -> Resolved:
        """The version a row of ``SQL``'s columns (in their order) describes, for ``spec``."""
        version, digest, yanked, reason, base_model, manifest, hub_repo, hub_revision = row
        return cls(
            spec.namespace,
            spec.name,
            version,
            digest,
            bool(yanked),
            reason,
            base_model,
            manifest,
            hub_repo,
            hub_revision,
        )

    @property
    def spec(self) -> str:
        return f"{self.namespace}/{self.name}@{self.version}"

    def to_json(self) -> bytes:
        """``Resolution.model_dump_json()`` of this version, byte for byte, without pydantic."""
        files = [
            {"path": entry["path"], "digest": entry["digest"], "size": entry["size"]}
            for entry in json.loads(self.manifest)["files"]
        ]
        return _ENCODE(
            {
                "namespace": self.namespace,
                "name": self.name,
                "version": self.version,
                "digest": self.digest,
                "yanked": self.yanked,
                "yanked_reason": self.yanked_reason,
                "base_model": self.base_model,
                "files": files,
                "hub_repo": self.hub_repo,
                "hub_revision": self.hub_revision,
            }
        ).encode()


def sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///path`` URL (no driver options), else None."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            if not rest or "?" in rest or rest == ":memory:":
                return None
            return Path(unquote(rest))
    return None


def _connect(path: Path, *, timeout: float) -> sqlite3.Connection:
    # isolation_level None: each SELECT is its own read transaction, so every lookup sees the
    # latest commit; a lookup of two statements opens one explicitly (``_lookup``).
    return sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        timeout=timeout,
        isolation_level=None,
        check_same_thread=False,  # Reader keeps one per thread; close() may run elsewhere
    )


def _at_head(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]


def _lookup(conn: sqlite3.Connection, spec: Spec) -> Resolved | None:
    params = {"namespace": spec.namespace, "name": spec.name, "selector": spec.selector}
    if spec.kind is SelectorKind.RANGE:
        conn.execute("BEGIN")  # one snapshot for both statements, as the full path has
        try:
            versions = [row[0] for row in conn.execute(SQL[SelectorKind.RANGE], params)]
            best = select(versions, spec.selector)
            if best is None:
                return None
            rows = conn.execute(SQL[SelectorKind.EXACT], {**params, "selector": best}).fetchall()
        finally:
            conn.execute("COMMIT")
    else:
        rows = conn.execute(SQL[spec.kind], params).fetchall()
    if len(rows) != 1:
        return None  # none (the full path words the error) or one digest, several versions
    return Resolved.of_row(spec, rows[0])


def _blob_size(conn: sqlite3.Connection, digest: str) -> int | None:
    row = conn.execute(BLOB_SIZE_SQL, (digest,)).fetchone()
    return None if row is None else int(row[0])


def resolve(url: str, spec: str) -> Resolved | None:
    """``spec`` resolved on the SQLite catalog at ``url``, or None: take the full path."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return None  # not SQLite, or not created yet: the full path creates and migrates it
    parsed = parse_spec(spec)  # a bad spec raises InvalidSpec here, as on the full path
    try:
        conn = _connect(path, timeout=15.0)
    except sqlite3.Error:
        return None
    try:
        return _lookup(conn, parsed) if _at_head(conn) else None
    except sqlite3.Error:
        return None  # no such table, locked, corrupt: the full path says what is wrong
    finally:
        conn.close()


class Reader:
    """Read-only connections to one SQLite catalog, held open (one per thread): opening one
    costs more than the lookup. They never wait for a lock (timeout 0), so a lookup may run on
    the server's event loop: in WAL mode readers do not wait for writers, and in the rare case
    that one would (recovery after a crash), the lookup returns None and the caller takes the
    full path, in a worker thread, with its busy timeout. Nothing is cached: every lookup
    reads the catalog as committed now, by this process or any other."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, timeout=0.0)
            with self._lock:
                self._opened.append(conn)
            self._local.conn = conn
        return conn

    def resolve(self, spec: Spec) -> Resolved | None:
        """``spec`` resolved now, or None: take the full path."""
        return self._read(_lookup, spec)

    def blob_size(self, digest: str) -> int | None:
        """The size of the catalog's blob ``digest`` now (downloads), or None: take the full
        path (``queries.blob_size``)."""
        return self._read(_blob_size, digest)

    def _read(self, lookup: Callable[[sqlite3.Connection, A], R | None], arg: A) -> R | None:
        conn = self._conn()
        try:
            return lookup(conn, arg)
        except sqlite3.Error:
            # Busy, or something the full path will put into words. The connection goes: one
            # left inside a transaction would keep reading an old snapshot.
            self._local.conn = None
            with self._lock:
                if conn in self._opened:
                    self._opened.remove(conn)
            conn.close()
            return None

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


def open_reader(url: str) -> Reader | None:
    """A Reader on the SQLite catalog at ``url`` if its schema is the one the SQL above reads
    (checked once: the server migrated it at start), else None."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return None
    try:
        conn = _connect(path, timeout=15.0)
    except sqlite3.Error:
        return None
    try:
        current = _at_head(conn)
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return Reader(path) if current else None
