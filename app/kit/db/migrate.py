"""Apply Alembic migrations from code (start-up, tests) as `alembic upgrade` would."""

import asyncio
import contextlib
import functools
import time
from collections.abc import Iterator

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import PROJECT_ROOT

# PostgreSQL advisory lock taken by migrations/env.py for the whole upgrade: only one replica
# migrates at a time. Arbitrary, shared by every replica.
MIGRATION_LOCK_KEY = 7_305_841_229


def drop_invalid_index(name: str) -> None:
    """In a migration, inside an autocommit block (PostgreSQL): drop the index `name` if a
    `CREATE INDEX CONCURRENTLY` that failed or was interrupted left it invalid. Such an index
    serves no query but is kept up to date by every write, and `IF NOT EXISTS` would take it
    for built."""
    state = op.get_bind().execute(
        text(
            "SELECT i.indisvalid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :index"
        ),
        {"index": name},
    )
    row = state.first()
    if row is not None and not row.indisvalid:
        op.execute(f"DROP INDEX CONCURRENTLY {name}")


@contextlib.contextmanager
def committing_each_step() -> Iterator[Connection]:
    """In a migration (PostgreSQL): a block whose statements commit as they run (Alembic's
    autocommit block), for steps that must not hold their locks until the migration ends,
    with the migration lock held across those commits, as migrations/env.py's transaction
    lock holds it otherwise. Yields the migration's connection."""
    bind = op.get_bind()
    # A session-level lock: the transaction-level one would end at the first commit.
    bind.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
    with op.get_context().autocommit_block():
        yield bind
    # Back in the transaction that writes alembic_version: hold its lock again before letting
    # go of the session's, so that no replica migrates before that commit.
    bind.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))
    bind.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))


def committed_high_water(connection: Connection, table: str, *, own_xid: str | None = None) -> int:
    """In a migration (PostgreSQL), on a connection of its own: the newest `id` of `table` (0
    when empty), once every transaction that was writing when it was read has ended (but the
    one whose xid is `own_xid`: the migration's own). Ids are taken in order, so every row up to
    it is then committed or gone: batches that go through the rows up to it in order see none
    appear behind them. Leaves the connection outside a transaction."""
    snapshot, high_water = connection.execute(
        text(f"SELECT CAST(pg_current_snapshot() AS text), (SELECT max(id) FROM {table})")
    ).one()
    connection.rollback()
    while connection.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity a "
            "JOIN pg_snapshot_xip(CAST(CAST(:snapshot AS text) AS pg_snapshot)) x "
            # xid8 counts wraparounds, xid does not.
            "ON CAST(CAST(x AS text) AS numeric) % 4294967296 "
            "= CAST(CAST(a.backend_xid AS text) AS numeric) "
            "WHERE a.datname = current_database() "
            "AND (CAST(:own AS text) IS NULL OR x <> CAST(CAST(:own AS text) AS xid8))"
        ),
        {"snapshot": snapshot, "own": own_xid},
    ).scalar_one():
        connection.rollback()
        time.sleep(0.1)
    connection.rollback()
    return int(high_water or 0)


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # Read by migrations/env.py; ConfigParser interpolation needs % doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # The application has configured logging already; alembic.ini's set-up is for the CLI.
    config.attributes["skip_logging_config"] = True
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """Alembic's async env runs its own event loop, so it must run off the current one."""
    await asyncio.to_thread(upgrade, database_url, revision)


_VERSION_TABLE = "alembic_version"


@functools.cache
def head_revision() -> str:
    """The revision this code's schema is at: the newest migration."""
    head = ScriptDirectory(str(PROJECT_ROOT / "migrations")).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None before its first migration. (Not Alembic's
    MigrationContext: it logs two lines each time, and readiness probes come every few
    seconds.)"""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table(_VERSION_TABLE)):
            return None
        revision = await conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}"))
        return revision.scalar_one_or_none()
