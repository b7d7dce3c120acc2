"""Helpers shared by the database tests."""

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.db import migrate
from app.db.tables import chat_messages, chat_sessions, metadata
from app.db.types import JSONDocument, UTCDateTime

BASE_REVISION = "0001_base_schema"
METADATA_COLUMNS = {"title", "last_message", "message_count"}
METADATA_INDEXES = {"idx_chat_sessions_updated_at", "idx_chat_sessions_user_id_updated"}

# The tables as revision 0001_base_schema creates them: bound with the application's types so
# ids, timestamps and JSON are stored exactly as the application stores them, on both dialects.
base_sessions = sa.table(
    "chat_sessions",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("user_id", sa.Text()),
    sa.column("active", sa.Boolean()),
    sa.column("metadata", JSONDocument),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
base_messages = sa.table(
    "chat_messages",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("seq", sa.Integer()),
    sa.column("role", sa.Text()),
    sa.column("content", sa.Text()),
    sa.column("metadata", JSONDocument),
    sa.column("created_at", UTCDateTime()),
)
# The columns revision 0002_session_metadata adds, read back with the application's types.
session_metadata = sa.table(
    "chat_sessions",
    sa.column("session_id", sa.Text()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("title", sa.Text()),
    sa.column("last_message", sa.Text()),
    sa.column("message_count", sa.Integer()),
)


def plain_engine(url: str) -> AsyncEngine:
    """An engine without a pool, so no connection outlives the block that used it."""
    return create_async_engine(url, poolclass=pool.NullPool)


def head_revision() -> str:
    head = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations have more than one head"
    return head


async def upgrade(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate.upgrade, url, revision)


async def downgrade(url: str, revision: str) -> None:
    await asyncio.to_thread(migrate.downgrade, url, revision)


async def alembic_versions(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
    return [str(version) for version in rows.scalars()]


async def table_names(conn: AsyncConnection) -> set[str]:
    return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def column_names(conn: AsyncConnection, table: str) -> set[str]:
    columns = await conn.run_sync(lambda sync: sa.inspect(sync).get_columns(table))
    return {column["name"] for column in columns}


async def index_names(conn: AsyncConnection, table: str) -> set[str]:
    indexes = await conn.run_sync(lambda sync: sa.inspect(sync).get_indexes(table))
    return {str(index["name"]) for index in indexes}


async def nullability(conn: AsyncConnection, table: str) -> dict[str, bool]:
    """Each column of `table` in the database, and whether it is nullable."""
    columns = await conn.run_sync(lambda sync: sa.inspect(sync).get_columns(table))
    return {column["name"]: column["nullable"] for column in columns}


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diffs: list[Any] = compare_metadata(context, metadata)
    if connection.dialect.name == "sqlite":
        # Alembic cannot compare SQLite expression indexes (`updated_at DESC`): it reports
        # them removed and added again. Their presence is checked by name elsewhere.
        diffs = [
            diff
            for diff in diffs
            if not (
                isinstance(diff, tuple)
                and diff[0] in {"add_index", "remove_index"}
                and diff[1].name in METADATA_INDEXES
            )
        ]
    return diffs


async def assert_schema_matches_tables(conn: AsyncConnection) -> None:
    """The migrated schema is the one app.db.tables describes: nothing drifted."""
    for table in (chat_sessions, chat_messages):
        assert await nullability(conn, table.name) == {
            column.name: column.nullable for column in table.columns
        }, table.name
    assert await conn.run_sync(_drift) == []
    assert await index_names(conn, "chat_sessions") >= METADATA_INDEXES
