"""The engine's connection set-up and transaction scopes, and the UTC timestamp type."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, StatementError

from app.db.engine import Database, create_engine
from app.db.types import UTCDateTime
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
