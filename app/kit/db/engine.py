"""Engine creation and the two kinds of transaction the services use: read and write."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, cast

import pydantic_core
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from app.config import Settings
from app.kit.db.url import ensure_sqlite_directory

_WRITE_OPTION = "chat_write_transaction"


def open_database(settings: Settings) -> "Database":
    """The service's database: DATABASE_URL, and the read replica if DATABASE_READ_URL is set."""
    replica = settings.database_read_url
    return Database(create_engine(settings), create_engine(settings, replica) if replica else None)


def create_engine(settings: Settings, database_url: str | None = None) -> AsyncEngine:
    """An engine on `database_url` (default: DATABASE_URL) with the service's pool settings."""
    database_url = database_url or settings.database_url
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(settings, database_url)
    # No `pool_pre_ping`: on asyncpg it is three round trips per checkout (BEGIN, a ping,
    # ROLLBACK), most of an empty transaction's cost (docs/performance.md). Without a round
    # trip: connections the server closed are replaced at checkout (`_replace_if_closed`);
    # `pool_recycle` retires connections before a firewall or NAT can drop them silently
    # (where a ping would only hang); and a connection that still fails as disconnected makes
    # SQLAlchemy replace every connection opened before it, so only requests in flight fail.
    engine = create_async_engine(
        url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_recycle=settings.database_pool_recycle_seconds,
        pool_timeout=settings.database_pool_timeout_seconds,
        json_deserializer=_json_loads,
        # Whatever the server's default_transaction_isolation: the trigger that numbers a
        # user's search entries (migration 0019) reads their newest once it has its turn, which
        # only a snapshot per statement shows. In BEGIN itself: no round trip of its own.
        isolation_level="READ COMMITTED",
    )
    event.listen(engine.sync_engine, "checkout", _replace_if_closed)
    event.listen(engine.sync_engine, "connect", _turn_off_jit)
    return engine


def _turn_off_jit(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """No JIT compilation on this service's connections.

    PostgreSQL compiles any statement whose estimated cost passes `jit_above_cost` (100,000
    by default, Supabase's too), whatever it really reads. A one-user search was estimated at
    220,057 rows where 29 to 48 matched, and compiling added about 15 ms to it (1M sessions:
    27.6 to 9.6 ms p50 over HTTP, raw SQL 18.5 to 3.0 ms; issue 12). Every statement here
    reads or writes a few rows, so JIT never pays off, and a misestimate should not cost
    milliseconds. `jit` is a per-session setting, so the service sets it itself: once per
    connection, not `SET LOCAL` in each transaction, which would cost a round trip per request
    and cover only the statements someone thought of. A `SET` after connecting rather than a
    start-up parameter (asyncpg's `server_settings`): PgBouncer and Supavisor refuse start-up
    parameters they do not know, while a `SET` goes through a session pooler and holds for as
    long as this connection to it (the transaction pooler is not supported anyway, README).
    Outside any transaction, so that no rollback undoes it.
    """
    dbapi_connection.run_async(lambda connection: connection.execute("SET jit = off"))


def _json_loads(text: str | bytes) -> Any:
    """JSON columns (message metadata) parsed by pydantic-core rather than the json module:
    about twice as fast per document, which counts when a long session is read whole (one
    document per message)."""
    return pydantic_core.from_json(text)


def _replace_if_closed(_dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """Hand out a fresh connection instead of one the server closed while it sat in the pool
    (a restart, `pg_terminate_backend`, a pooler's idle timeout): asyncpg notices the close
    while the connection is idle, so asking costs no round trip. Raising `DisconnectionError`
    on checkout is SQLAlchemy's documented way to make the pool reconnect."""
    if record.driver_connection is not None and record.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def _create_sqlite_engine(settings: Settings, database_url: str) -> AsyncEngine:
    ensure_sqlite_directory(database_url)
    engine = create_async_engine(
        database_url,
        echo=settings.database_echo,
        pool_timeout=settings.database_pool_timeout_seconds,
        json_deserializer=_json_loads,
    )
    busy_timeout_ms = settings.sqlite_busy_timeout_ms

    # The driver's default transaction handling issues BEGIN lazily, so a read-modify-write can
    # silently lose updates. Take control of BEGIN ourselves (SQLAlchemy's documented recipe):
    # writes start with BEGIN IMMEDIATE and so queue on the write lock instead of failing.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        is_write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if is_write else "BEGIN")

    return engine


class DriverStatement:
    """A statement compiled once for a dialect, to be run by the driver itself: its SQL, and
    how to turn named values into the driver's positional arguments (SQLAlchemy's own bind
    processing, a UUID as hex text on SQLite say)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        self._processors = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        processors = self._processors
        return [
            processors[name](values[name]) if name in processors else values[name]
            for name in self._names
        ]


class DriverConnection:
    """A pooled connection on which each statement commits as it runs, sent by the driver
    without SQLAlchemy's execution machinery: for a frequent write that is one statement,
    atomic by itself (a growing reply's save). No BEGIN and COMMIT round trips either."""

    def __init__(
        self, driver: Any, dialect: Dialect, compiled: dict[ClauseElement, DriverStatement]
    ):
        self._driver = driver
        self._dialect = dialect
        self._compiled = compiled

    async def execute(self, statement: ClauseElement, values: dict[str, Any]) -> int:
        """Run a write statement built once (module level); how many rows it changed."""
        prepared = self._compiled.get(statement)
        if prepared is None:
            prepared = self._compiled[statement] = DriverStatement(statement, self._dialect)
        arguments = prepared.arguments(values)
        if self._dialect.name == "postgresql":  # asyncpg: the command tag, "UPDATE 1"
            tag: str = await self._driver.execute(prepared.sql, *arguments)
            return int(tag.rpartition(" ")[2] or 0)
        cursor = await self._driver.execute(prepared.sql, arguments)  # aiosqlite, autocommit
        try:
            return int(cursor.rowcount)
        finally:
            await cursor.close()


class Database:
    """The engine plus the transaction scopes the service layer works in."""

    def __init__(self, engine: AsyncEngine, read_engine: AsyncEngine | None = None) -> None:
        self.engine = engine
        # The read replica (DATABASE_READ_URL), used by `replica_read()` only; None: none.
        self.read_engine = read_engine
        # SQLite has one write lock per database. A writer that finds it taken waits in
        # SQLite's busy handler, which sleeps in growing steps (up to 100 ms) rather than
        # queueing, so this process's writers take turns here, in order, and only other
        # processes ever wait in `busy_timeout`. PostgreSQL locks rows, not the database.
        self._write_turn: AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )
        # What `DriverConnection` compiled, by statement (each built once, at module level).
        self._driver_statements: dict[ClauseElement, DriverStatement] = {}
        # `replica_read()`'s engine. On PostgreSQL its connections run each statement as its
        # own transaction: at READ COMMITTED (PostgreSQL's default) every statement takes its
        # own snapshot, in a transaction or not, so BEGIN and COMMIT would add two round trips
        # (about a third of a sidebar request's database work) and no consistency. SQLite
        # keeps the transaction: there it is what makes the statements one snapshot.
        replica = read_engine or engine
        self._replica_reads = (
            replica.execution_options(isolation_level="AUTOCOMMIT")
            if replica.dialect.name == "postgresql"
            else None
        )

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction. `snapshot`: every statement sees the database as the first
        one did, as in `replica_read`, for statements whose answers must agree."""
        async with _read_transaction(self.engine, snapshot=snapshot) as conn:
            yield conn

    @asynccontextmanager
    async def replica_read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        """Reads on the read replica if there is one, else on the database: one transaction
        on SQLite, each statement its own on PostgreSQL (each sees what was committed when it
        began, as at READ COMMITTED in one transaction).

        Only for reads that may lag behind the latest writes by the replica's delay: never
        one that a client makes to see what it has just written (opening a session after a
        branch switch, a folder list after creating one). docs/scaling.md lists the users.

        `snapshot`: every statement sees the database as the first one did, for statements
        whose answers must agree. A SQLite read transaction always does; on PostgreSQL it is
        one REPEATABLE READ transaction (allowed on a standby; a read-only transaction never
        fails to serialize).
        """
        if self._replica_reads is not None and not snapshot:
            async with self._replica_reads.connect() as conn:
                yield conn
            return
        async with _read_transaction(self.read_engine or self.engine, snapshot=snapshot) as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on exit, rolled back on error.

        On SQLite it holds the database write lock from its first statement, which is what
        makes read-then-write sequences inside it safe; this process's write transactions
        take turns before they take a connection (so one must never open another).
        """
        async with self._write_turn, self.engine.connect() as conn:
            await conn.execution_options(**{_WRITE_OPTION: True})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def single_statements(self) -> AsyncIterator[DriverConnection]:
        """A connection whose write statements each commit as they run (`DriverConnection`).
        For writes that are one statement: several statements here are not one transaction.
        On SQLite it takes this process's turn to write, as `write` does."""
        async with self._write_turn, self.engine.connect() as conn:
            # SQLAlchemy begins nothing until it runs a statement itself, so the connection is
            # in autocommit (asyncpg outside a transaction; SQLite with isolation_level None),
            # and returning it to the pool costs no rollback round trip.
            raw = await conn.get_raw_connection()
            yield DriverConnection(
                raw.driver_connection, self.engine.dialect, self._driver_statements
            )

    def pool_use(self, *, replica: bool = False) -> tuple[int | None, int | None]:
        """(connections in use, idle connections) of the pool (the read replica's with
        `replica`); None for a pool without them, or no replica."""
        engine = self.read_engine if replica else self.engine
        pool = None if engine is None else engine.pool
        if not isinstance(pool, QueuePool):
            return None, None
        return pool.checkedout(), pool.checkedin()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not None:
            await self.read_engine.dispose()


@asynccontextmanager
async def _read_transaction(
    engine: AsyncEngine, *, snapshot: bool
) -> AsyncIterator[AsyncConnection]:
    """A transaction of `engine` for reads; with `snapshot`, REPEATABLE READ on PostgreSQL (a
    SQLite transaction is a snapshot already)."""
    async with engine.connect() as conn:
        if snapshot and conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn
