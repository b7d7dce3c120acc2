"""The imports revision on both databases: two new tables over existing data; one running
import per owner (a partial unique index, on both); a session's import source goes with it;
going back drops both tables and keeps the sessions."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.db.tables import chat_import_sources, chat_imports
from tests.db.helpers import (
    IMPORTS_REVISION,
    IMPORTS_TABLES,
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
NEW_TABLES = {table.name for table in IMPORTS_TABLES}


def previous_revision() -> str:
    return down_revision_of(IMPORTS_REVISION)


def import_row(owner_key: str, status: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "user_id": owner_key or None,
        "owner_key": owner_key,
        "status": status,
        "format": "chatgpt",
        "total": None,
        "done": 0,
        "imported": 0,
        "skipped": 0,
        "failed": [],
        "error": None,
        "process_id": uuid.uuid4(),
        "created_at": T0,
        "updated_at": T0,
    }


async def test_upgrade_adds_the_tables_over_existing_sessions(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    added = await tables_added_over_a_session(fresh_url, fresh_engine, IMPORTS_REVISION, at=T0)

    assert added == NEW_TABLES
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_one_running_import_per_owner_and_sources_go_with_their_session(
    fresh_url: str,
) -> None:
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        await store_base_session(database, "s", at=T0)
        async with database.write() as conn:
            await conn.execute(
                sa.insert(chat_imports),
                # Finished ones do not count; another owner's running one neither.
                [import_row("alice", s) for s in ("running", "done", "failed", "done")]
                + [import_row("", "running")],
            )
            await conn.execute(
                sa.insert(chat_import_sources).values(
                    user_id="alice", source_id="chatgpt:c1", session_id="s"
                )
            )
        with pytest.raises(IntegrityError):
            async with database.write() as conn:
                await conn.execute(sa.insert(chat_imports).values(import_row("alice", "running")))
        with pytest.raises(IntegrityError):
            async with database.write() as conn:
                await conn.execute(sa.insert(chat_imports).values(import_row("bob", "paused")))
        async with database.write() as conn:
            await conn.execute(sa.text("DELETE FROM chat_sessions WHERE session_id = 's'"))
        async with database.read() as conn:
            left = await conn.execute(sa.select(sa.func.count()).select_from(chat_import_sources))
            assert left.scalar() == 0


async def test_downgrade_drops_both_tables_and_keeps_the_sessions(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, IMPORTS_REVISION)
    async with app_database(fresh_url) as database:
        await store_base_session(database, "s", at=T0)
        async with database.write() as conn:
            await conn.execute(sa.insert(chat_imports).values(import_row("alice", "done")))
            await conn.execute(
                sa.insert(chat_import_sources).values(
                    user_id="alice", source_id="chatgpt:c1", session_id="s"
                )
            )

    await downgrade(fresh_url, previous_revision())

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [previous_revision()]
        assert NEW_TABLES.isdisjoint(await table_names(conn))
        sessions = await conn.execute(sa.text("SELECT session_id FROM chat_sessions"))
        assert sessions.scalars().all() == ["s"]
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
