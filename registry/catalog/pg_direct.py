"""Resolve a spec on PostgreSQL through libpq itself: ``stance serve``'s fast path there (issue 19).

The full path costs a resolve several times its query: a hop to a worker thread, a pooled
SQLAlchemy connection, a pydantic ``Resolution``; and psycopg's own async cursors cost 2.5x
what libpq does (~100 against ~40 us of CPU a query, measured). So the server's event loop
holds a few connections of its own and speaks to them through ``psycopg.pq``, psycopg's libpq
wrapper: the statements of ``queries._RESOLUTIONS`` as SQLAlchemy compiles them for
PostgreSQL (the same text, so the paths cannot drift apart), prepared once per connection,
their rows read into ``sqlite_direct.Resolved``, whose ``to_json`` is
``Resolution.model_dump_json`` byte for byte.

As on SQLite, only the common case: anything else (not found, a digest naming several
versions, a driver error, a catalog that cannot be reached within ``CONNECT_TIMEOUT_S``)
returns None and the caller takes the full path, which owns the errors and their messages (a
catalog that is down: 503 ``unreachable``). Nothing is cached: each statement runs on its
own in autocommit and reads what is committed now; a range's two statements share one
REPEATABLE READ snapshot, as they share one transaction on SQLite.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGresult
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql

from registry.catalog import queries
from registry.catalog.db import current_revision
from registry.catalog.revision import HEAD_REVISION
from registry.catalog.sqlite_direct import Resolved
from registry.spec import SelectorKind, Spec, select

# One worker's event loop overlaps its requests' round trips on these. On loopback with two
# cores 2 did as well as 4 or 8 (each is a PostgreSQL backend to switch to) and 1 was a queue;
# a catalog far away (1 ms a round trip) would want more.
CONNECTIONS = 2
CONNECT_TIMEOUT_S = 5  # a catalog host that drops packets costs a request this, not a hang
_DIALECT = postgresql.psycopg.dialect(paramstyle="numeric_dollar")  # $1: what libpq binds
_BEGIN = b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def _plan(kind: SelectorKind) -> tuple[bytes, bytes, tuple[str, ...]]:
    compiled = queries._RESOLUTIONS[kind].compile(dialect=_DIALECT)
    name = f"stance_resolve_{kind.value}".encode()
    return name, str(compiled).encode(), tuple(compiled.positiontup or ())


# Each kind's prepared statement: its name, its SQL and the order of its parameters.
PLANS = {kind: _plan(kind) for kind in queries._RESOLUTIONS}


class _Connection:
    """One connection with the statements prepared, used by one lookup at a time. The event
    loop watches its socket for as long as it is open (watching it anew for every statement
    cost two more system calls each)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn  # psycopg connected it (timeouts, hosts, SSL); libpq speaks below
        self.pg = conn.pgconn
        self._fd = self.pg.socket
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self.lost: psycopg.Error | None = None
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            self.pg.consume_input()  # read now, so the watch does not fire again
        except psycopg.Error as exc:  # the connection is lost
            self.lost = exc
            self._loop.remove_reader(self._fd)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @classmethod
    async def open(cls, params: dict[str, Any]) -> _Connection:
        conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        connection = cls(conn)
        try:
            for name, sql, _ in PLANS.values():
                connection.pg.send_prepare(name, sql)
                await connection._result(pq.ExecStatus.COMMAND_OK)
        except BaseException:
            connection.close()
            raise
        return connection

    def close(self) -> None:
        if self.lost is None:
            self._loop.remove_reader(self._fd)
        self.pg.finish()  # all psycopg's close does here; the wrapper then reads as closed

    async def lookup(self, spec: Spec) -> Resolved | None:
        params = {"namespace": spec.namespace, "name": spec.name, "selector": spec.selector}
        if spec.kind is SelectorKind.RANGE:
            await self._command(_BEGIN)
            rows = await self._rows(SelectorKind.RANGE, params)
            versions = [cast(bytes, row[0]).decode() for row in rows]  # NOT NULL
            best = select(versions, spec.selector)
            rows = [] if best is None else await self._rows(SelectorKind.EXACT, params, best)
            await self._command(b"COMMIT")
        else:
            rows = await self._rows(spec.kind, params)
        if len(rows) != 1:
            return None  # none (the full path words the error) or one digest, several versions
        text: list[object] = [None if value is None else value.decode() for value in rows[0]]
        text[2] = text[2] == "t"  # yanked, in PostgreSQL's text form
        return Resolved.of_row(spec, text)

    async def _rows(
        self, kind: SelectorKind, params: dict[str, str], selector: str | None = None
    ) -> list[list[bytes | None]]:
        name, _, order = PLANS[kind]
        if selector is not None:
            params = {**params, "selector": selector}
        self.pg.send_query_prepared(name, [params[key].encode() for key in order])
        result = await self._result(pq.ExecStatus.TUPLES_OK)
        columns = range(result.nfields)
        return [[result.get_value(row, c) for c in columns] for row in range(result.ntuples)]

    async def _command(self, sql: bytes) -> None:
        self.pg.send_query(sql)
        await self._result(pq.ExecStatus.COMMAND_OK)

    async def _result(self, expected: pq.ExecStatus) -> PGresult:
        """The one result of the command just sent, waiting on the event loop (libpq is in
        non-blocking mode); psycopg.Error when the connection fails or the command does."""
        pg = self.pg
        while pg.flush():  # a statement too large for the socket's buffer: not these
            await self._wait(writable=True)
        results = []
        while True:
            while pg.is_busy():
                await self._wait()
            result = pg.get_result()
            if result is None:
                break
            results.append(result)
        if len(results) != 1 or results[0].status != expected:
            message = results[-1].error_message if results else b"no result"
            raise psycopg.DatabaseError(message.decode(errors="replace"))
        return results[0]

    async def _wait(self, *, writable: bool = False) -> None:
        if self.lost is not None:
            raise self.lost
        self._waiter = waiter = self._loop.create_future()
        if writable:
            self._loop.add_writer(self._fd, self._wake)
        try:
            await waiter
        finally:
            self._waiter = None
            if writable:
                self._loop.remove_writer(self._fd)


class Reader:
    """Up to ``size`` connections to one PostgreSQL catalog, opened on first use in the event
    loop that uses them (the server's) and kept open: opening one costs more than many
    lookups. A lookup holds one for its statements; one that fails is closed, not reused
    (it may be lost, or inside a transaction), and its lookup returns None."""

    def __init__(self, params: dict[str, Any], size: int = CONNECTIONS) -> None:
        self._params = {"connect_timeout": CONNECT_TIMEOUT_S, **params, "client_encoding": "UTF8"}
        self._size = size
        self._idle: list[_Connection] = []
        self._opened = 0  # idle, in use or being opened
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def resolve(self, spec: Spec) -> Resolved | None:
        """``spec`` resolved now, or None: take the full path."""
        conn = await self._acquire()
        if conn is None:
            return None
        try:
            found = await conn.lookup(spec)
        except (psycopg.Error, OSError):
            self._discard(conn)
            return None
        except BaseException:  # cancelled mid-statement: its answer may still be on the way
            self._discard(conn)
            raise
        self._release(conn)
        return found

    async def _acquire(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                return None  # connections belong to the loop that opened them
            self._loop = loop
        if self._closed:
            return None
        while self._idle:
            conn = self._idle.pop()
            if conn.lost is None:
                return conn
            self._discard(conn)  # closed by the server while idle
        if self._opened < self._size:
            self._opened += 1
            try:
                return await _Connection.open(self._params)
            except (psycopg.Error, OSError):
                self._vacate()
                return None  # down or refused: the full path says so (503)
            except BaseException:
                self._vacate()
                raise
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
            if handed is not None:
                self._release(handed)  # handed over just as this request was cancelled
            raise

    def _hand_over(self, conn: _Connection | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            self._discard(conn)
        elif not self._hand_over(conn):
            self._idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._vacate()

    def _vacate(self) -> None:
        """A connection closed or never made: one waiter stops waiting (full path)."""
        self._opened -= 1
        self._hand_over(None)

    def close(self) -> None:
        """Close the idle connections now and the busy ones as their lookups end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)
        while self._hand_over(None):
            pass


def open_reader(engine: Engine) -> Reader | None:
    """A Reader on the PostgreSQL catalog of ``engine`` (psycopg's, the one make_engine picks)
    if its schema is the one the statements above read, else None. The connection parameters
    are the engine's own."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return None
    if current_revision(engine) != HEAD_REVISION:
        return None
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # SQLAlchemy's adapters for its own connections
    return Reader(dict(params))
