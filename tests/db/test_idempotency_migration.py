"""The idempotency-keys revision on both databases: a new table over existing data; one row
per owner and key; a session's keys go with it; going back drops the table and keeps the
sessions."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.db.engine import Database
from app.kit.db.tables import chat_idempotency_keys
from tests.db.helpers import (
    IDEMPOTENCY_REVISION,
    IDEMPOTENCY_TABLE,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    down_revision_of,
    downgrade,
    store_base_session,
    table_names,
    tables_added_over_a_session,
    upgrade,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def previous_revision() -> str:
    return down_revision_of(IDEMPOTENCY_REVISION)


def key_row(user_id: str, key: str, session_id: str) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "key": key,
        "fingerprint": "f" * 64,
        "session_id": session_id,
        "question_id": uuid.uuid4(),
        "reply_id": uuid.uuid4(),
        "created_at": T0,
    }


async def key_count(database: Database) -> int:
    async with database.read() as conn:
        found = await conn.execute(sa.select(sa.func.count()).select_from(chat_idempotency_keys))
        return int(found.scalar_one())


async def test_upgrade_adds_the_table_over_existing_sessions(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    added = await tables_added_over_a_session(fresh_url, fresh_engine, IDEMPOTENCY_REVISION, at=T0)

    assert added == {IDEMPOTENCY_TABLE.name}
    # Later revisions change other tables (0020: chat_feedback): the schema is compared at head.
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_one_row_per_owner_and_key_and_keys_go_with_their_session(fresh_url: str) -> None:
    await upgrade(fresh_url, IDEMPOTENCY_REVISION)
    async with app_database(fresh_url) as database:
        await store_base_session(database, "s", at=T0)
        await store_base_session(database, "t", at=T0)
        async with database.write() as conn:
            # Another owner's same key, and another key of the same owner, are other rows.
            await conn.execute(
                sa.insert(chat_idempotency_keys),
                [key_row("alice", "k", "s"), key_row("bob", "k", "t"), key_row("alice", "j", "t")],
            )
        with pytest.raises(IntegrityError):
            async with database.write() as conn:
                await conn.execute(
                    sa.insert(chat_idempotency_keys).values(key_row("alice", "k", "t"))
                )
        async with database.write() as conn:
            await conn.execute(sa.text("DELETE FROM chat_sessions WHERE session_id = 't'"))
        async with database.read() as conn:
            left = await conn.execute(
                sa.select(chat_idempotency_keys.c.user_id, chat_idempotency_keys.c.key)
            )
            assert [tuple(row) for row in left] == [("alice", "k")]


async def test_downgrade_drops_the_table_and_keeps_the_sessions(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, IDEMPOTENCY_REVISION)
    async with app_database(fresh_url) as database:
        await store_base_session(database, "s", at=T0)
        async with database.write() as conn:
            await conn.execute(sa.insert(chat_idempotency_keys).values(key_row("alice", "k", "s")))
        assert await key_count(database) == 1

    await downgrade(fresh_url, previous_revision())

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [previous_revision()]
        assert IDEMPOTENCY_TABLE.name not in await table_names(conn)
        sessions = await conn.execute(sa.text("SELECT session_id FROM chat_sessions"))
        assert sessions.scalars().all() == ["s"]
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
