"""The engine's connection set-up and transaction scopes, and the UTC timestamp type."""

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.db.engine import Database, create_engine
from app.kit.db.types import UTCDateTime
from tests.conftest import DatabaseFactory, make_settings

BUSY_TIMEOUT_MS = 4321

events = sa.Table(
    "events",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime, nullable=False),
)


@pytest.fixture
async def sqlite_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create("sqlite")


@pytest.fixture
async def sqlite_database(sqlite_url: str) -> AsyncIterator[Database]:
    db = Database(create_engine(make_settings(sqlite_url, sqlite_busy_timeout_ms=BUSY_TIMEOUT_MS)))
    yield db
    await db.dispose()


async def pragma(db: Database, name: str) -> object:
    async with db.read() as conn:
        return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()


async def test_sqlite_connection_pragmas(sqlite_database: Database) -> None:
    assert await pragma(sqlite_database, "journal_mode") == "wal"
    assert await pragma(sqlite_database, "foreign_keys") == 1
    assert await pragma(sqlite_database, "busy_timeout") == BUSY_TIMEOUT_MS
    assert await pragma(sqlite_database, "synchronous") == 1  # NORMAL


async def test_sqlite_write_transaction_takes_the_write_lock_at_begin(sqlite_url: str) -> None:
    first = Database(create_engine(make_settings(sqlite_url)))
    # Busy timeout 0: a second writer fails at once instead of waiting, so nothing is timed.
    second = Database(create_engine(make_settings(sqlite_url, sqlite_busy_timeout_ms=0)))
    try:
        async with first.write() as conn:
            await conn.execute(sa.text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            await conn.execute(sa.text("INSERT INTO counter VALUES (0)"))

        async with first.write():
            # No statement ran in the first transaction yet: only BEGIN IMMEDIATE holds the lock.
            with pytest.raises(OperationalError, match="database is locked"):
                async with second.write():
                    pass
            # Readers are not blocked by a writer (WAL).
            async with second.read() as conn:
                assert (await conn.execute(sa.text("SELECT n FROM counter"))).scalar_one() == 0

        async with second.write() as conn:
            await conn.execute(sa.text("UPDATE counter SET n = n + 1"))
        async with first.read() as conn:
            assert (await conn.execute(sa.text("SELECT n FROM counter"))).scalar_one() == 1
    finally:
        await first.dispose()
        await second.dispose()


async def test_sqlite_read_transaction_does_not_take_the_write_lock(sqlite_url: str) -> None:
    first = Database(create_engine(make_settings(sqlite_url)))
    second = Database(create_engine(make_settings(sqlite_url, sqlite_busy_timeout_ms=0)))
    try:
        async with first.read(), second.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
    finally:
        await first.dispose()
        await second.dispose()


async def test_sqlite_writers_of_one_process_take_turns(sqlite_url: str) -> None:
    # Busy timeout 0: a writer that met another's lock in SQLite would fail at once, so every
    # increment landing shows that this process's writers queued before reaching SQLite.
    db = Database(create_engine(make_settings(sqlite_url, sqlite_busy_timeout_ms=0)))
    try:
        async with db.write() as conn:
            await conn.execute(sa.text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            await conn.execute(sa.text("INSERT INTO counter VALUES (0)"))

        async def increment() -> None:
            async with db.write() as conn:
                n = (await conn.execute(sa.text("SELECT n FROM counter"))).scalar_one()
                await conn.execute(sa.text("UPDATE counter SET n = :n"), {"n": n + 1})

        await asyncio.gather(*(increment() for _ in range(20)))
        async with db.read() as conn:
            assert (await conn.execute(sa.text("SELECT n FROM counter"))).scalar_one() == 20
    finally:
        await db.dispose()


@pytest.fixture
async def postgres_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create("postgresql")


async def _end_other_connections(url: str) -> int:
    """End every other connection to the database, as a restart or a pooler's idle timeout
    would, and wait until their server processes have exited."""
    admin = await asyncpg.connect(url)
    try:
        ended = await admin.fetch(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return sum(1 for (done,) in ended if done)
    finally:
        await admin.close()


async def _select_one(db: Database) -> None:
    async with db.read() as conn:
        assert (await conn.exec_driver_sql("SELECT 1")).scalar_one() == 1


async def test_postgresql_pool_replaces_connections_the_server_closed(postgres_url: str) -> None:
    db = Database(create_engine(make_settings(postgres_url)))
    try:
        closed = [asyncio.Event() for _ in range(3)]
        async with AsyncExitStack() as held:  # three connections in the pool, all used once
            for event_ in closed:
                conn = await held.enter_async_context(db.engine.connect())
                driver = (await conn.get_raw_connection()).driver_connection
                assert driver is not None
                driver.add_termination_listener(lambda _conn, done=event_: done.set())
        assert await _end_other_connections(postgres_url) == 3
        async with asyncio.timeout(10):
            for event_ in closed:
                await event_.wait()

        # No request pays for the closed connections: none is handed out again.
        for _ in range(6):
            await _select_one(db)
    finally:
        await db.dispose()


async def test_postgresql_recovers_after_one_failure_on_a_connection_that_died_unseen(
    postgres_url: str,
) -> None:
    db = Database(create_engine(make_settings(postgres_url)))
    try:
        async with AsyncExitStack() as held:
            for _ in range(3):
                await held.enter_async_context(db.read())

        # The connections die while this event loop is blocked, so the pool cannot have seen
        # it before the next checkout: a connection that dies just as it is handed out.
        ended: list[int] = []
        killer = threading.Thread(
            target=lambda: ended.append(asyncio.run(_end_other_connections(postgres_url)))
        )
        killer.start()
        killer.join()
        assert ended == [3]

        with pytest.raises(DBAPIError) as failed:
            await _select_one(db)
        assert failed.value.connection_invalidated
        # That failure retires every connection opened before it; the rest get fresh ones.
        for _ in range(6):
            await _select_one(db)
    finally:
        await db.dispose()


async def _jit_in(conn: AsyncConnection) -> tuple[str, bool]:
    """`SHOW jit` on a connection, and whether a statement run there was compiled."""
    setting = str((await conn.exec_driver_sql("SHOW jit")).scalar_one())
    return setting, "JIT" in await _explain(conn)


async def _explain(conn: AsyncConnection | asyncpg.Connection) -> dict[str, Any]:
    statement = "EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM generate_series(1, 10)"
    if isinstance(conn, asyncpg.Connection):  # JSON as text
        plans = json.loads(await conn.fetchval(statement))
    else:  # parsed by the engine
        plans = (await conn.exec_driver_sql(statement)).scalar_one()
    plan: dict[str, Any] = plans[0]
    return plan


async def _transaction_ids(conn: AsyncConnection) -> set[int]:
    """The ids of the transactions two statements ran in."""
    statement = "SELECT txid_current()"
    return {(await conn.exec_driver_sql(statement)).scalar_one() for _ in range(2)}


async def test_postgresql_replica_reads_run_each_statement_alone(postgres_url: str) -> None:
    """A sidebar read sends its statements without BEGIN and COMMIT (two round trips that
    bought nothing at READ COMMITTED), and hands back a connection whose next user gets a
    transaction again."""
    db = Database(create_engine(make_settings(postgres_url, database_pool_size=1)))
    try:
        async with db.replica_read() as conn:
            assert len(await _transaction_ids(conn)) == 2
        async with db.read() as conn:  # the same pooled connection
            assert len(await _transaction_ids(conn)) == 1
        async with db.write() as conn:
            assert len(await _transaction_ids(conn)) == 1
    finally:
        await db.dispose()


async def test_postgresql_connections_never_compile_with_jit(postgres_url: str) -> None:
    """The service's connections run without JIT, whatever the server says: a search was
    compiled for 15 ms on a misestimate (issue 12). Here every statement passes
    `jit_above_cost` (0 for the database), so any connection with JIT on compiles each one."""
    admin = await asyncpg.connect(postgres_url)
    try:
        if not await admin.fetchval("SELECT pg_jit_available()"):
            pytest.skip("this PostgreSQL server has no JIT")
        name = make_url(postgres_url).database
        await admin.execute(f'ALTER DATABASE "{name}" SET jit_above_cost = 0')
    finally:
        await admin.close()
    plain = await asyncpg.connect(postgres_url)
    try:
        assert "JIT" in await _explain(plain)  # what the server does by itself
    finally:
        await plain.close()

    db = Database(create_engine(make_settings(postgres_url)))
    try:
        async with db.read() as first, db.write() as second:  # two connections at once
            assert [await _jit_in(first), await _jit_in(second)] == [("off", False)] * 2
        # Connections opened later (the pool replaces closed and recycled ones) too.
        await db.engine.dispose()
        async with db.read() as conn:
            assert await _jit_in(conn) == ("off", False)
    finally:
        await db.dispose()


@pytest.fixture
async def events_database(
    backend: str, database_factory: DatabaseFactory
) -> AsyncIterator[Database]:
    db = Database(create_engine(make_settings(await database_factory.create(backend))))
    async with db.write() as conn:
        await conn.run_sync(events.metadata.create_all)
    yield db
    await db.dispose()


async def test_utc_datetime_round_trips_aware_utc(events_database: Database) -> None:
    plus_five_thirty = timezone(timedelta(hours=5, minutes=30))
    # 10:00+05:30 is 04:30 UTC: earlier than 05:00 UTC, although its wall-clock time is later.
    values = {
        1: datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=plus_five_thirty),
        2: datetime(2025, 6, 1, 5, 0, tzinfo=UTC),
        3: datetime(2025, 6, 1, 4, 30, tzinfo=timezone(timedelta(hours=-1))),  # 05:30 UTC
    }
    async with events_database.write() as conn:
        await conn.execute(sa.insert(events), [{"id": k, "at": v} for k, v in values.items()])
    async with events_database.read() as conn:
        rows = list(await conn.execute(sa.select(events.c.id, events.c.at).order_by(events.c.at)))
        if conn.dialect.name == "sqlite":
            # Stored as naive UTC text in one format, so SQLite's text comparison is by instant.
            raw = "SELECT at FROM events WHERE id = 1"
        else:
            raw = (
                "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
                " FROM events WHERE id = 1"
            )
        assert (await conn.exec_driver_sql(raw)).scalar_one() == "2025-06-01 04:30:00.123456"
        after_five = (
            await conn.execute(
                sa.select(events.c.id).where(events.c.at > datetime(2025, 6, 1, 5, tzinfo=UTC))
            )
        ).scalars()
        assert list(after_five) == [3]
    assert [row.id for row in rows] == [1, 2, 3]
    for row in rows:
        assert row.at == values[row.id]
        assert row.at.tzinfo == UTC
        assert row.at.utcoffset() == timedelta(0)


async def test_utc_datetime_rejects_naive_datetimes(events_database: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        async with events_database.write() as conn:
            await conn.execute(sa.insert(events).values(id=1, at=datetime(2025, 6, 1, 12, 0)))
    async with events_database.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar() == 0
