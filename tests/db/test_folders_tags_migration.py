"""The folders-and-tags revision on both databases: three new tables, the session's folder
column and its index, existing sessions in no folder; a session's tag links go with it; the
unique keys hold at the top level too; going back drops it all and keeps the sessions and
the sidebar's descending indexes."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.db.tables import chat_folders, chat_messages, chat_session_tags, chat_tags
from tests.db.helpers import (
    FOLDER_COLUMN,
    FOLDER_LIST_INDEX,
    FOLDER_LIST_INDEX_KEYS,
    FOLDERS_TAGS_REVISION,
    FOLDERS_TAGS_TABLES,
    SIDEBAR_INDEX_KEYS,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    column_names,
    down_revision_of,
    downgrade,
    index_keys,
    index_names,
    store_base_session,
    table_names,
    upgrade,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
NEW_TABLES = {table.name for table in FOLDERS_TAGS_TABLES}
SESSION_FOLDER = sa.table(
    "chat_sessions", sa.column("session_id", sa.Text()), sa.column("folder_id", sa.Uuid())
)


def previous_revision() -> str:
    return down_revision_of(FOLDERS_TAGS_REVISION)


def folder_row(name: str, parent_id: uuid.UUID | None = None) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "user_id": "alice",
        "parent_id": parent_id,
        "parent_key": parent_id.hex if parent_id else "",
        "name": name,
        "name_key": name.casefold(),
        "created_at": T0,
    }


async def test_upgrade_adds_the_tables_the_column_and_its_index(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, previous_revision())
    async with app_database(fresh_url) as database:
        await store_base_session(database, "before", at=T0)
    async with fresh_engine.connect() as conn:
        tables_before = await table_names(conn)
        session_columns = await column_names(conn, "chat_sessions")

    await upgrade(fresh_url, FOLDERS_TAGS_REVISION)

    async with fresh_engine.connect() as conn:
        assert await table_names(conn) - tables_before == NEW_TABLES
        assert await column_names(conn, "chat_sessions") - session_columns == {FOLDER_COLUMN}
        assert FOLDER_LIST_INDEX in await index_names(conn, "chat_sessions")
        assert await index_keys(conn, FOLDER_LIST_INDEX) == FOLDER_LIST_INDEX_KEYS
        rows = await conn.execute(sa.select(SESSION_FOLDER.c.folder_id))
        assert rows.scalars().all() == [None]
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_tag_links_go_with_their_session_and_names_are_unique_per_parent(
    fresh_url: str,
) -> None:
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        await store_base_session(database, "s", at=T0)
        await store_base_session(database, "t", at=T0)
        tag_id = uuid.uuid4()
        top = folder_row("Work")
        async with database.write() as conn:
            await conn.execute(
                sa.insert(chat_tags).values(
                    id=tag_id, user_id="alice", name="Work", name_key="work", created_at=T0
                )
            )
            await conn.execute(
                sa.insert(chat_session_tags),
                [
                    {"session_id": s, "tag_id": tag_id, "position": 0, "user_id": "alice"}
                    for s in ("s", "t")
                ],
            )
            await conn.execute(sa.insert(chat_folders).values(top))
            # The same name under another parent is another folder.
            await conn.execute(sa.insert(chat_folders).values(folder_row("work", top["id"])))
        async with database.write() as conn:
            await conn.execute(sa.text("DELETE FROM chat_sessions WHERE session_id = 's'"))
        async with database.read() as conn:
            left = await conn.execute(sa.select(chat_session_tags.c.session_id))
            assert left.scalars().all() == ["t"]
        # A second top-level "WORK": a NULL parent would not clash, its parent key does.
        with pytest.raises(IntegrityError):
            async with database.write() as conn:
                await conn.execute(sa.insert(chat_folders).values(folder_row("WORK")))
        with pytest.raises(IntegrityError):
            async with database.write() as conn:
                await conn.execute(
                    sa.insert(chat_tags).values(
                        id=uuid.uuid4(),
                        user_id="alice",
                        name="WORK",
                        name_key="work",
                        created_at=T0,
                    )
                )


async def test_downgrade_drops_it_all_and_keeps_the_sessions(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, FOLDERS_TAGS_REVISION)
    async with app_database(fresh_url) as database:
        await store_base_session(database, "s", at=T0)
        folder = folder_row("Work")
        async with database.write() as conn:
            await conn.execute(sa.insert(chat_folders).values(folder))
            await conn.execute(sa.update(SESSION_FOLDER).values(folder_id=folder["id"]))
            await conn.execute(
                sa.insert(chat_messages).values(
                    id=uuid.uuid4(),
                    session_id="s",
                    seq=1,
                    ordinal=1,
                    role="user",
                    content="kept",
                    metadata={},
                    created_at=T0,
                )
            )

    await downgrade(fresh_url, previous_revision())

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [previous_revision()]
        assert NEW_TABLES.isdisjoint(await table_names(conn))
        assert FOLDER_COLUMN not in await column_names(conn, "chat_sessions")
        sessions = await conn.execute(sa.text("SELECT session_id FROM chat_sessions"))
        assert sessions.scalars().all() == ["s"]
        # The rebuild of chat_sessions on SQLite did not take the messages with it.
        messages = await conn.execute(sa.text("SELECT content FROM chat_messages"))
        assert messages.scalars().all() == ["kept"]
        # Rebuilding chat_sessions on SQLite kept its sidebar indexes as they were.
        for name, keys in SIDEBAR_INDEX_KEYS.items():
            assert await index_keys(conn, name) == keys, name
    # And up again.
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
