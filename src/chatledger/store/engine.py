"""Where statements run: `Connector`, one unit of work at a time, on SQLite or PostgreSQL.

The store writes each operation as one synchronous function over a SQLAlchemy
`Connection` (a *unit of work*: a few statements, no waiting on anything but the
database). A connector runs units:

- `AsyncConnector` (PostgreSQL, asyncpg): the unit runs in a greenlet via
  `AsyncConnection.run_sync`; every statement is non-blocking network I/O. The hot path's
  single statements (`Connector.fetch`) skip the unit: they go to the asyncpg connection
  SQLAlchemy's pool lends, and this module does for them what SQLAlchemy does for its
  own statements when the database goes away (`_broken`, `_Pings`).
- `SQLiteConnector`: the unit runs in a worker thread on the standard library's sqlite3
  driver. SQLite has no network to wait on; aiosqlite is also sqlite3 in a thread, but
  hops to its thread for every statement (and SQLAlchemy's adapter over it for every
  cursor, fetch and close). Even hand-written, the same statements with one hop per unit
  run about 1.5 times as many turns as on aiosqlite (docs/benchmarks.md, "floor: sqlite3"
  against "floor: aiosqlite"). One hop per unit also keeps write transactions short: the write lock
  is never held across a wait for the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import math
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    create_engine as create_sync_engine,
    event,
    exc,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import Table

from chatledger.errors import UnavailableError

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "AsyncConnector",
    "Connector",
    "SQLiteConnector",
    "Statement",
    "connect",
    "normalize_url",
]

T = TypeVar("T")
Work = Callable[[Connection], T]

# Execution option marking the engine that write units use (see `_sqlite_begin`).
_WRITE = "chatledger_write"

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


def normalize_url(url: str | URL) -> URL:
    """Map a plain `postgresql://` URL to asyncpg and any SQLite URL to the sqlite3 driver."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def connect(url: str | URL, **engine_options: Any) -> Connector:
    """The connector for a database URL (`sqlite...` or `postgresql...`)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SQLiteConnector(parsed, **engine_options)
    # SQLAlchemy closes overflow connections as they come back, so its default pool of 5
    # reconnects all the time under load (docs/benchmarks.md). 10 kept, 20 at most: five
    # replicas stay within PostgreSQL's default max_connections of 100.
    engine_options.setdefault("pool_size", 10)
    engine_options.setdefault("max_overflow", 10)
    engine = create_async_engine(parsed, **engine_options)
    event.listen(engine.sync_engine, "handle_error", _outage_is_a_disconnect)
    pings = _Pings()
    event.listen(engine.sync_engine.pool, "checkin", pings.returned)
    event.listen(engine.sync_engine.pool, "checkout", pings.lending)
    return AsyncConnector(engine, pings=pings)


# SQLSTATEs that mean "the server is going away or not taking connections" rather than
# "this statement is wrong": connection exceptions (class 08), the shutdown of the server
# or of this backend (57P01 admin, 57P02 crash, 57P03 still starting), and running out of
# connection slots (53300). asyncpg reports them as plain errors, not disconnects.
_OUTAGE_STATES: Final = ("08", "57P01", "57P02", "57P03", "53300")
# A pooled connection idle longer than this is pinged before it is handed out: the first
# request after the database restarted must not be the one that finds its connection dead.
# Connections in steady use skip the round trip.
IDLE_BEFORE_PING: Final = 1.0


def _sqlstate(error: BaseException | None) -> str:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else ""


def _is_outage(error: exc.DBAPIError) -> bool:
    return error.connection_invalidated or _sqlstate(error.orig).startswith(_OUTAGE_STATES)


def _outage_is_a_disconnect(context: Any) -> None:
    # Marked as a disconnect, the connection is thrown away (and with it every pooled
    # connection older than it) instead of going back to the pool to fail again.
    if _sqlstate(context.original_exception).startswith(_OUTAGE_STATES):
        context.is_disconnect = True


def _broken(error: Exception) -> bool:
    """Whether an error from asyncpg means its connection can no longer be trusted (the
    server gone or going away, the socket closed, the protocol out of step, as when the
    server ended an idle connection), rather than that the statement or its arguments
    were wrong."""
    # Here, not at the top: a store on SQLite never imports asyncpg (nor `chatledger token`).
    import asyncpg

    if isinstance(error, asyncpg.PostgresError):  # arguments it cannot encode are one too
        return _sqlstate(error).startswith(_OUTAGE_STATES)
    return isinstance(error, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError)


class _Pings:
    """Which pooled connections are pinged before they are lent: those idle for a while
    (`IDLE_BEFORE_PING`), and every one that was in the pool when a statement sent on the
    driver (`AsyncConnector.fetch`) found the database gone. SQLAlchemy discards the whole
    pool when one of its own statements does; those on the driver it never sees."""

    def __init__(self) -> None:
        self.outage_at = -math.inf  # time.monotonic() of the last outage seen on the driver

    def returned(self, dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def lending(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None:  # just opened
            return
        if idle_since > self.outage_at and time.monotonic() - idle_since < IDLE_BEFORE_PING:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError("a pooled connection did not answer a ping") from error


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn "the database cannot be reached" into `UnavailableError`; let bugs through."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, OSError) as error:
        raise UnavailableError("the database is unavailable") from error
    except exc.DBAPIError as error:
        if _is_outage(error):
            raise UnavailableError("the database is unavailable") from error
        raise


class Statement:
    """SQL written with named parameters (`:name`), as each driver takes it: SQLite's
    `sqlite3` takes the names; asyncpg takes `$1`, `$2`, … and exactly the parameters the
    statement uses, so each name is numbered where it first appears."""

    def __init__(self, text: str) -> None:
        self.sqlite = text
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] not in self.names:
                self.names.append(match[1])
            return f"${self.names.index(match[1]) + 1}"

        # Not a cast (`::text`): a name follows a single colon.
        self.postgresql = re.sub(r"(?<![:\w]):([a-z_]+)", number, text)

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """`params` as asyncpg takes them."""
        return tuple(params[name] for name in self.names)

    def run(self, conn: Connection, params: Mapping[str, Any]) -> CursorResult[*tuple[Any, ...]]:
        """Run in the unit of work `conn` is in, through the driver's own SQL (not
        compiled by SQLAlchemy)."""
        if conn.dialect.name == "sqlite":
            return conn.exec_driver_sql(self.sqlite, dict(params))
        return conn.exec_driver_sql(self.postgresql, self.args(params))

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(self.sqlite, [dict(row) for row in rows])
        else:
            conn.exec_driver_sql(self.postgresql, [self.args(row) for row in rows])


class Connector(ABC):
    """Runs units of work: each `write` is one transaction, each `read` one snapshot.

    Inside `transaction()` the connector is bound to one open transaction, and every
    `read` and `write` joins it; it commits when the block exits and rolls back if the
    block raises.
    """

    dialect: str

    @property
    @abstractmethod
    def sync_engine(self) -> Engine:
        """The engine statements go through (for event listeners and inspection)."""

    @abstractmethod
    async def write(self, work: Work[T]) -> T: ...

    @abstractmethod
    async def read(self, work: Work[T]) -> T: ...

    bound: bool = False
    """Whether this connector is bound to one open transaction (`transaction()`)."""

    async def fetch(
        self, statement: Statement, params: Mapping[str, Any], *, writes: bool = False
    ) -> Sequence[Sequence[Any]]:
        """One statement, atomic by itself, and its rows: a read, or (`writes`) a write
        that commits by itself.

        On PostgreSQL outside a transaction it is sent on the driver's connection, as it
        comes from the pool: without BEGIN or COMMIT (one round trip instead of three),
        and without SQLAlchemy's execution and result machinery, which costs more than
        the database does on these statements (docs/benchmarks.md). Elsewhere it is a
        unit of work like any other.

        Raises:
            UnavailableError: the database cannot be reached.
            Exception: what the driver raises for a wrong statement (asyncpg's own
                errors on that path, not SQLAlchemy's): a bug.
        """

        def unit(conn: Connection) -> Sequence[Sequence[Any]]:
            return statement.run(conn, params).all()

        return await (self.write(unit) if writes else self.read(unit))

    @abstractmethod
    def transaction(self) -> Any:
        """An async context manager yielding a `Connector` bound to one transaction."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def scrub(self) -> None:
        """Make deleted data unreadable from the database's files, where the database
        leaves it readable (SQLite's write-ahead log)."""

    def upsert(self, table: Table) -> Any:
        """`INSERT` with `ON CONFLICT` support, in this database's dialect."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)


class AsyncConnector(Connector):
    """Units of work on an `AsyncEngine` (PostgreSQL with asyncpg)."""

    def __init__(self, engine: AsyncEngine, *, pings: _Pings | None = None) -> None:
        self.engine = engine
        self._pings = pings or _Pings()
        self.dialect = engine.dialect.name
        self._connection: AsyncConnection | None = None
        self._writer = engine
        # Reads need no transaction: skipping BEGIN and ROLLBACK saves two round trips.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def sync_engine(self) -> Engine:
        return self.engine.sync_engine

    async def write(self, work: Work[T]) -> T:
        if self._connection is not None:
            return await self._connection.run_sync(work)
        with database_errors():
            async with self._writer.begin() as connection:
                return await connection.run_sync(work)

    async def read(self, work: Work[T]) -> T:
        if self._connection is not None:
            return await self._connection.run_sync(work)
        with database_errors():
            async with self._reader.connect() as connection:
                return await connection.run_sync(work)

    async def fetch(
        self, statement: Statement, params: Mapping[str, Any], *, writes: bool = False
    ) -> Sequence[Sequence[Any]]:
        if self._connection is not None:
            return await super().fetch(statement, params, writes=writes)
        with database_errors():
            async with self._writer.connect() as connection:
                pooled = await connection.get_raw_connection()
                driver: asyncpg.Connection = pooled.driver_connection
                try:
                    # Outside a transaction asyncpg commits each statement by itself.
                    rows: list[asyncpg.Record] = await driver.fetch(
                        statement.postgresql, *statement.args(params)
                    )
                    return rows
                except Exception as error:
                    if not _broken(error):
                        raise  # the statement or its arguments are wrong: a bug
                    # As SQLAlchemy does with its own statements (`_outage_is_a_disconnect`):
                    # the connection is thrown away, not given back to fail again, and its
                    # pool-mates are pinged before their next use.
                    self._pings.outage_at = time.monotonic()
                    await connection.invalidate()
                    raise UnavailableError("the database is unavailable") from error

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connector]:
        if self._connection is not None:
            yield self
            return
        with database_errors():
            async with self._writer.begin() as connection:
                # A copy: building an engine with other options, as __init__ does, costs
                # more than a turn's statement (it showed in a profile of /chat).
                bound = copy.copy(self)
                bound._connection, bound.bound = connection, True
                yield bound

    async def scrub(self) -> None:
        # PostgreSQL's deleted rows stay in their pages until (auto)vacuum reuses them,
        # and no statement of a client can hurry that along for one row.
        return

    async def close(self) -> None:
        await self.engine.dispose()


class SQLiteConnector(Connector):
    """Units of work on SQLite, each run in one hop to a worker thread.

    Connections use WAL (readers never block the writer), a busy timeout (a writer from
    another process waits for the lock instead of failing), foreign keys (deleting a
    conversation cascades to its messages) and `BEGIN IMMEDIATE` for writes (a
    transaction that reads then writes takes the lock up front, instead of failing with
    "database is locked" when two of them try to upgrade a read lock). Writers of this
    process queue on an asyncio lock, in order, rather than in SQLite's sleeping retry loop,
    and since only one writes at a time they share one connection, kept open; each worker
    thread keeps one for reading too. Checking a connection out of the pool and back for
    every unit cost about a third of a read.
    """

    def __init__(self, url: URL, *, threads: int = 4, **engine_options: Any) -> None:
        if url.database in (None, "", ":memory:"):
            raise ValueError("chatledger needs an SQLite file, not an in-memory database")
        engine_options.setdefault("pool_size", threads)
        self._engine = create_sync_engine(
            url, connect_args={"check_same_thread": False}, **engine_options
        )
        event.listen(self._engine, "connect", _sqlite_connect)
        event.listen(self._engine, "begin", _sqlite_begin)
        self._writer = self._engine.execution_options(**{_WRITE: True})
        self.dialect = "sqlite"
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="chatledger-sqlite")
        self._write_lock = asyncio.Lock()
        self._write_connection: Connection | None = None  # used under `_write_lock` only
        self._thread = threading.local()  # each worker thread's reading connection
        self._read_connections: list[Connection] = []

    @property
    def sync_engine(self) -> Engine:
        return self._engine

    async def _in_thread(self, call: Callable[[], T]) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread cannot be interrupted: wait until it is done with the
            # connection (and the write lock) before letting the cancellation through.
            await asyncio.wait([future])
            raise

    def _writing(self) -> Connection:
        if self._write_connection is None or self._write_connection.invalidated:
            self._write_connection = self._writer.connect()
        return self._write_connection

    def _write_unit(self, work: Work[T]) -> T:
        with database_errors():
            connection = self._writing()
            with connection.begin():
                return work(connection)

    def _read_unit(self, work: Work[T]) -> T:
        with database_errors():
            connection: Connection | None = getattr(self._thread, "connection", None)
            if connection is None or connection.invalidated:
                connection = self._thread.connection = self._engine.connect()
                self._read_connections.append(connection)
            try:
                return work(connection)
            finally:
                # Ends the read (no BEGIN was sent, so this costs nothing), so that the
                # next one sees what was committed since.
                connection.rollback()

    async def write(self, work: Work[T]) -> T:
        async with self._write_lock:
            return await self._in_thread(lambda: self._write_unit(work))

    async def read(self, work: Work[T]) -> T:
        return await self._in_thread(lambda: self._read_unit(work))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connector]:
        async with self._write_lock:
            connection = await self._in_thread(self._begin)
            bound = _BoundSQLite(self, connection)
            try:
                yield bound
            except BaseException:
                await asyncio.shield(self._in_thread(lambda: _finish(connection, commit=False)))
                raise
            await asyncio.shield(self._in_thread(lambda: _finish(connection, commit=True)))

    async def scrub(self) -> None:
        # secure_delete zeroes what a delete frees in the database file, but the log still
        # holds the pages as they were written: copy them back and empty it.
        def checkpoint() -> None:
            with database_errors():
                # Straight to the driver: SQLAlchemy would wrap it in a transaction, inside
                # which SQLite cannot checkpoint.
                driver = self._writing().connection.driver_connection
                if driver is not None:
                    driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        async with self._write_lock:
            await self._in_thread(checkpoint)

    def _begin(self) -> Connection:
        with database_errors():
            connection = self._writing()
            connection.begin()
            return connection

    async def close(self) -> None:
        async with self._write_lock:
            for connection in [self._write_connection, *self._read_connections]:
                if connection is not None:
                    await self._in_thread(connection.close)
        self._engine.dispose()
        self._executor.shutdown(wait=True)


class _BoundSQLite(Connector):
    """A `SQLiteConnector` inside `transaction()`: every unit joins the open transaction."""

    bound = True

    def __init__(self, parent: SQLiteConnector, connection: Connection) -> None:
        self.dialect = "sqlite"
        self._parent = parent
        self._connection = connection

    @property
    def sync_engine(self) -> Engine:
        return self._parent.sync_engine

    async def write(self, work: Work[T]) -> T:
        return await self._parent._in_thread(lambda: self._run(work))

    read = write

    def _run(self, work: Work[T]) -> T:
        with database_errors():
            return work(self._connection)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connector]:
        yield self

    async def scrub(self) -> None:
        # Not inside a transaction: what it deleted is not even committed yet.
        return

    async def close(self) -> None:
        raise RuntimeError("close the store, not a transaction")


def _finish(connection: Connection, *, commit: bool) -> None:
    with database_errors():
        if commit:
            connection.commit()
        else:
            connection.rollback()


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the driver; `_sqlite_begin` emits BEGIN itself.
    dbapi_connection.isolation_level = None
    # secure_delete: a deleted message's text is overwritten, not left in free pages for
    # anyone with the file to read (docs/architecture.md has its cost).
    for pragma in (
        "busy_timeout=10000",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "secure_delete=ON",
    ):
        dbapi_connection.execute(f"PRAGMA {pragma}")
    _use_wal(dbapi_connection)


def _use_wal(dbapi_connection: Any) -> None:
    """Put the database file in WAL mode, which it then keeps for every connection.

    Only the first connections to a new file ever switch. The switch needs a lock that
    SQLite refuses at once, without waiting out the busy timeout, while another connection
    opening the same file holds it: so it is retried for a moment. This runs in a worker
    thread (connections are opened inside units of work), never on the event loop.
    """
    deadline = time.monotonic() + 10
    while dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(connection: Connection) -> None:
    # SQLAlchemy "begins" reads too; they run without BEGIN, each SELECT atomic on its
    # own, so that a reader never takes the write lock.
    if connection.get_execution_options().get(_WRITE):
        # Straight to the driver: through exec_driver_sql, BEGIN cost as much as the
        # statements after it (docs/benchmarks.md, "Where chatledger's time goes").
        driver = connection.connection.driver_connection
        if driver is None:  # only a closed connection has none, and none begins
            raise exc.ResourceClosedError("this connection is closed")
        driver.execute("BEGIN IMMEDIATE")
