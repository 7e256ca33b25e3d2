"""Resolve a spec on a bare stdlib ``sqlite3`` connection: ``stance resolve``'s start-up path.

Importing SQLAlchemy and pydantic costs ~0.5 s, ten times the query; a CLI resolve on the
embedded SQLite catalog has 0.3 s in all (issue 16). This module answers the common case only:
a catalog at ``HEAD_REVISION`` and a spec that selects a version. Anything else (another
database, an older schema, not found, a digest naming several versions) returns None and the
caller takes the full path (``queries.resolve_spec``), which owns the errors and their messages.

The SQL is the very text SQLAlchemy compiles from ``queries._RESOLUTIONS`` for SQLite;
``tests/test_cli_startup.py`` compares them, so the two paths cannot drift apart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from registry.catalog.revision import HEAD_REVISION
from registry.spec import SelectorKind, parse_spec, select

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


@dataclass(frozen=True)
class Resolved:
    """What ``stance resolve`` prints: the fields of ``Resolution`` it needs."""

    namespace: str
    name: str
    version: str
    digest: str
    yanked: bool
    yanked_reason: str | None

    @property
    def spec(self) -> str:
        return f"{self.namespace}/{self.name}@{self.version}"


def sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///path`` URL (no driver options), else None."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            if not rest or "?" in rest or rest == ":memory:":
                return None
            return Path(unquote(rest))
    return None


def resolve(url: str, spec: str) -> Resolved | None:
    """``spec`` resolved on the SQLite catalog at ``url``, or None: take the full path."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return None  # not SQLite, or not created yet: the full path creates and migrates it
    parsed = parse_spec(spec)  # a bad spec raises InvalidSpec here, as on the full path
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=15.0)
    except sqlite3.Error:
        return None
    try:
        if conn.execute("SELECT version_num FROM alembic_version").fetchall() != [(HEAD_REVISION,)]:
            return None
        params = {"namespace": parsed.namespace, "name": parsed.name, "selector": parsed.selector}
        if parsed.kind is SelectorKind.RANGE:
            versions = [row[0] for row in conn.execute(SQL[SelectorKind.RANGE], params)]
            best = select(versions, parsed.selector)
            if best is None:
                return None
            params["selector"] = best
            rows = conn.execute(SQL[SelectorKind.EXACT], params).fetchall()
        else:
            rows = conn.execute(SQL[parsed.kind], params).fetchall()
    except sqlite3.Error:
        return None  # no such table, locked, corrupt: the full path says what is wrong
    finally:
        conn.close()
    if len(rows) != 1:
        return None  # none (the full path words the error) or one digest, several versions
    version, digest, yanked, reason = rows[0][:4]
    return Resolved(parsed.namespace, parsed.name, version, digest, bool(yanked), reason)
