"""The Alembic migrations on both databases: 0002's backfill of existing data, downgrade,
parity of the head with app.kit.db.tables. Revision 0003 has tests of its own
(test_sidebar_migration.py)."""

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.db import migrate
from app.kit.db.tables import chat_messages, chat_sessions
from tests.db.helpers import (
    BASE_REVISION,
    METADATA_COLUMNS,
    METADATA_REVISION,
    SEED_INDEXES,
    SIDEBAR_COLUMNS,
    SIDEBAR_REVISION,
    alembic_versions,
    assert_schema_matches_tables,
    assert_seed_index_definitions,
    base_messages,
    base_sessions,
    column_names,
    downgrade,
    head_revision,
    index_definitions,
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

    await upgrade(fresh_url, METADATA_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [METADATA_REVISION]
        assert await session_metadata_by_id(conn) == expected_by_id(SEED)


async def test_backfill_covers_more_sessions_than_one_batch(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(fresh_url))
    batch_size = script.get_revision(METADATA_REVISION).module._BACKFILL_BATCH
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

    await upgrade(fresh_url, METADATA_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [METADATA_REVISION]
        assert await session_metadata_by_id(conn) == expected_by_id(seed)


async def test_metadata_revision_creates_the_seed_indexes(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, METADATA_REVISION)
    async with fresh_engine.connect() as conn:
        assert await index_names(conn, "chat_sessions") == SEED_INDEXES
        definitions = await index_definitions(conn, "chat_sessions")
    assert_seed_index_definitions(backend, definitions)


async def test_downgrade_keeps_data_and_upgrade_backfills_again(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, BASE_REVISION)
    async with fresh_engine.begin() as conn:
        await insert_base_data(conn, SEED)
    await upgrade(fresh_url, METADATA_REVISION)
    async with fresh_engine.connect() as conn:
        sessions_before = await base_rows(conn, base_sessions)
        messages_before = await base_rows(conn, base_messages)

    await downgrade(fresh_url, BASE_REVISION)

    async with fresh_engine.begin() as conn:
        assert await alembic_versions(conn) == [BASE_REVISION]
        assert METADATA_COLUMNS.isdisjoint(await column_names(conn, "chat_sessions"))
        assert await index_names(conn, "chat_sessions") == set()
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

    await upgrade(fresh_url, METADATA_REVISION)

    seed = tuple(
        SeedSession(s.session_id, s.user_id, s.updated_at, (late,))
        if s.session_id == "empty"
        else s
        for s in SEED
    )
    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [METADATA_REVISION]
        assert await session_metadata_by_id(conn) == expected_by_id(seed)
        assert await index_names(conn, "chat_sessions") == SEED_INDEXES

    # The later revisions leave the backfilled data alone and end at app.kit.db.tables' schema.
    await upgrade(fresh_url)

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


@pytest.mark.parametrize(
    ("before", "after", "added"),
    [
        (BASE_REVISION, METADATA_REVISION, METADATA_COLUMNS),
        (METADATA_REVISION, SIDEBAR_REVISION, SIDEBAR_COLUMNS),
    ],
    ids=["base_lacks_only_the_metadata_columns", "0002_lacks_only_pinned"],
)
@pytest.mark.parametrize("table", [chat_sessions, chat_messages], ids=lambda t: t.name)
async def test_revision_adds_only_its_columns(
    table: sa.Table,
    before: str,
    after: str,
    added: set[str],
    fresh_url: str,
    fresh_engine: AsyncEngine,
) -> None:
    await upgrade(fresh_url, before)
    async with fresh_engine.connect() as conn:
        columns_before = await column_names(conn, table.name)
    await upgrade(fresh_url, after)
    async with fresh_engine.connect() as conn:
        columns_after = await column_names(conn, table.name)
    assert columns_before <= columns_after
    assert columns_after - columns_before == (added if table is chat_sessions else set())
    # Together with the parity test at head: every revision's columns are the declared ones.
    assert columns_after <= set(table.columns.keys())
