"""The Alembic migrations on both databases: backfill of existing data, downgrade, parity."""

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import migrate
from app.db.tables import chat_messages, chat_sessions
from tests.db.helpers import (
    BASE_REVISION,
    METADATA_COLUMNS,
    METADATA_INDEXES,
    alembic_versions,
    assert_schema_matches_tables,
    base_messages,
    base_sessions,
    column_names,
    downgrade,
    head_revision,
    index_names,
    table_names,
    upgrade,
)
from tests.db.seed import (
    SEED,
    T0,
    SeedMessage,
    SeedSession,
    base_rows,
    expected_by_id,
    insert_base_data,
    session_metadata_by_id,
)


def test_seed_exercises_the_shortening_rules() -> None:
    """Guards the data above: each case must really hit the rule it is meant to hit."""
    expected = {session.session_id: session.expected() for session in SEED}
    assert expected["first-user-later"]["title"].endswith("...")
    assert "\n" not in expected["first-user-later"]["title"]
    assert expected["long-last"]["last_message"].endswith("...")
    assert expected["long-last"]["updated_at"] == T0 + timedelta(hours=2)
    assert expected["emoji"]["title"] == "x" * 45 + "..."
    assert expected["emoji"]["last_message"] == "y" * 95 + "..."
    assert expected["emoji"]["updated_at"] == T0 + timedelta(hours=1)
    assert expected["first-user-later"]["updated_at"] == T0 + timedelta(minutes=5)
    assert expected["no-user"]["title"] is None
    assert expected["empty"] == {
        "message_count": 0,
        "title": None,
        "last_message": None,
        "updated_at": T0 + timedelta(minutes=30),
    }


async def test_upgrade_backfills_existing_sessions(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, BASE_REVISION)
    async with fresh_engine.begin() as conn:
        assert METADATA_COLUMNS.isdisjoint(await column_names(conn, "chat_sessions"))
        await insert_base_data(conn, SEED)

    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        assert await session_metadata_by_id(conn) == expected_by_id(SEED)


async def test_backfill_covers_more_sessions_than_one_batch(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(fresh_url))
    batch_size = script.get_revision("0002_session_metadata").module._BACKFILL_BATCH
    assert isinstance(batch_size, int)
    seed = tuple(
        SeedSession(
            f"s-{i:05d}",
            None,
            T0,
            (SeedMessage(1, "user", f"question number {i} " + "z" * (i % 60), T0),),
        )
        for i in range(batch_size * 2 + 3)
    )
    await upgrade(fresh_url, BASE_REVISION)
    async with fresh_engine.begin() as conn:
        await insert_base_data(conn, seed)

    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        assert await session_metadata_by_id(conn) == expected_by_id(seed)


async def test_head_creates_the_sidebar_indexes(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        assert await index_names(conn, "chat_sessions") >= METADATA_INDEXES
        if backend == "postgresql":
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chat_sessions'"
        else:
            query = "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'chat_sessions'"
        definitions = {str(name): str(sql) for name, sql in await conn.execute(sa.text(query))}
    user_index = definitions["idx_chat_sessions_user_id_updated"]
    assert "updated_at DESC" in user_index
    assert "updated_at DESC" in definitions["idx_chat_sessions_updated_at"]
    if backend == "postgresql":
        assert "WHERE (user_id IS NOT NULL)" in user_index
    else:
        assert "WHERE user_id IS NOT NULL" in user_index


async def test_downgrade_keeps_data_and_upgrade_backfills_again(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, BASE_REVISION)
    async with fresh_engine.begin() as conn:
        await insert_base_data(conn, SEED)
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        sessions_before = await base_rows(conn, base_sessions)
        messages_before = await base_rows(conn, base_messages)

    await downgrade(fresh_url, BASE_REVISION)

    async with fresh_engine.begin() as conn:
        assert await alembic_versions(conn) == [BASE_REVISION]
        assert METADATA_COLUMNS.isdisjoint(await column_names(conn, "chat_sessions"))
        assert METADATA_INDEXES.isdisjoint(await index_names(conn, "chat_sessions"))
        assert await base_rows(conn, base_sessions) == sessions_before
        assert await base_rows(conn, base_messages) == messages_before
        # Written while the database is on the old revision: the next upgrade must count it.
        late = SeedMessage(1, "user", "A late   first\nmessage", T0 + timedelta(hours=5))
        await conn.execute(
            sa.insert(base_messages).values(
                id=uuid.uuid4(),
                session_id="empty",
                seq=late.seq,
                role=late.role,
                content=late.content,
                metadata={},
                created_at=late.created_at,
            )
        )

    await upgrade(fresh_url)

    seed = tuple(
        SeedSession(s.session_id, s.user_id, s.updated_at, (late,))
        if s.session_id == "empty"
        else s
        for s in SEED
    )
    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        assert await session_metadata_by_id(conn) == expected_by_id(seed)
        await assert_schema_matches_tables(conn)


async def test_downgrade_to_base_and_upgrade_again_on_empty_database(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url)
    await downgrade(fresh_url, "base")
    async with fresh_engine.connect() as conn:
        assert {"chat_sessions", "chat_messages"}.isdisjoint(await table_names(conn))
        assert await alembic_versions(conn) == []

    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        assert {"chat_sessions", "chat_messages"} <= await table_names(conn)
        assert await alembic_versions(conn) == [head_revision()]
        await assert_schema_matches_tables(conn)


async def test_version_at_head_is_the_single_head(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(fresh_url))
    assert len(script.get_heads()) == 1
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [script.get_current_head()]


async def test_migrated_schema_matches_core_tables(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


@pytest.mark.parametrize("table", [chat_sessions, chat_messages], ids=lambda t: t.name)
async def test_base_revision_lacks_only_the_metadata_columns(
    table: sa.Table, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, BASE_REVISION)
    async with fresh_engine.connect() as conn:
        missing = set(table.columns.keys()) - await column_names(conn, table.name)
    assert missing == (METADATA_COLUMNS if table is chat_sessions else set())
