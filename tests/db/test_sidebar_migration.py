"""Revision 0003_sidebar_organising on both databases: `pinned`, and the keyset indexes that
replace the seed's two."""

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.kit.db.tables import chat_sessions
from app.kit.db.types import UTCDateTime
from tests.db.helpers import (
    BASE_REVISION,
    FOLDER_COLUMN,
    FOLDER_LIST_INDEX,
    METADATA_REVISION,
    SEED_INDEXES,
    SIDEBAR_COLUMNS,
    SIDEBAR_INDEX_KEYS,
    SIDEBAR_INDEXES,
    TITLE_SOURCE_COLUMNS,
    TREE_COLUMNS,
    alembic_versions,
    assert_schema_matches_tables,
    assert_seed_index_definitions,
    base_messages,
    base_sessions,
    column_names,
    downgrade,
    head_revision,
    index_definitions,
    index_keys,
    index_names,
    nullability,
    pinned_by_id,
    upgrade,
)
from tests.db.seed import (
    SEED,
    T0,
    base_rows,
    expected_by_id,
    insert_base_data,
    session_metadata_by_id,
)

SESSION_IDS = {session.session_id for session in SEED}


async def snapshot(conn: AsyncConnection) -> dict[str, Any]:
    """Everything revision 0003 must leave as it is: rows as 0002 knows them."""
    return {
        "sessions": await base_rows(conn, base_sessions),
        "messages": await base_rows(conn, base_messages),
        "metadata": await session_metadata_by_id(conn),
    }


async def seed_at_metadata_revision(url: str, engine: AsyncEngine) -> dict[str, Any]:
    """A database at revision 0002 holding SEED, backfilled; returns its snapshot."""
    await upgrade(url, BASE_REVISION)
    async with engine.begin() as conn:
        await insert_base_data(conn, SEED)
    await upgrade(url, METADATA_REVISION)
    async with engine.connect() as conn:
        assert "pinned" not in await column_names(conn, "chat_sessions")
        return await snapshot(conn)


async def test_upgrade_leaves_existing_sessions_unpinned(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    before = await seed_at_metadata_revision(fresh_url, fresh_engine)
    assert before["metadata"] == expected_by_id(SEED)

    await upgrade(fresh_url)

    async with fresh_engine.begin() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        assert await pinned_by_id(conn) == dict.fromkeys(SESSION_IDS, False)
        assert await snapshot(conn) == before
        assert (await nullability(conn, "chat_sessions"))["pinned"] is False
        # A row written by hand (or by a replica still on 0002's code) is unpinned too.
        await conn.execute(
            sa.insert(base_sessions).values(
                id=uuid.uuid4(),
                session_id="by-hand",
                user_id=None,
                active=True,
                metadata={},
                created_at=T0,
                updated_at=T0,
            )
        )
        assert (await pinned_by_id(conn))["by-hand"] is False


def _key_sql(keys: list[tuple[str, bool]]) -> str:
    return ", ".join(f"{name} DESC" if descending else name for name, descending in keys)


async def test_head_replaces_the_seed_indexes_with_the_keyset_indexes(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        # And the folder index of revision 0010 (tested in test_folders_tags_migration).
        assert await index_names(conn, "chat_sessions") == SIDEBAR_INDEXES | {FOLDER_LIST_INDEX}
        definitions = await index_definitions(conn, "chat_sessions")
        keys = {name: await index_keys(conn, name) for name in SIDEBAR_INDEXES}
    assert SEED_INDEXES.isdisjoint(definitions)
    assert keys == SIDEBAR_INDEX_KEYS
    assert _key_sql(SIDEBAR_INDEX_KEYS["idx_chat_sessions_user_list"]) == (
        "user_id, active, pinned DESC, updated_at DESC, id DESC"
    )
    for name, index_key in SIDEBAR_INDEX_KEYS.items():
        # Ending with the key list: whole-table indexes, neither partial nor with INCLUDE.
        using = " USING btree " if backend == "postgresql" else " "
        assert definitions[name].endswith(f"{using}({_key_sql(index_key)})"), definitions[name]


async def test_downgrade_drops_pinned_and_keeps_the_data(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_metadata_revision(fresh_url, fresh_engine)
    await upgrade(fresh_url)
    async with fresh_engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE chat_sessions SET pinned = :true WHERE session_id IN ('emoji', 'empty')"
            ).bindparams(sa.bindparam("true", True, type_=sa.Boolean()))
        )
        await conn.execute(
            sa.text(
                "UPDATE chat_sessions SET active = :false WHERE session_id = 'no-user'"
            ).bindparams(sa.bindparam("false", False, type_=sa.Boolean()))
        )
        assert sum((await pinned_by_id(conn)).values()) == 2
        before = await snapshot(conn)
    assert not next(s for s in before["sessions"] if s["session_id"] == "no-user")["active"]

    await downgrade(fresh_url, METADATA_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [METADATA_REVISION]
        assert await column_names(conn, "chat_sessions") == (
            set(chat_sessions.columns.keys())
            - SIDEBAR_COLUMNS
            - TREE_COLUMNS["chat_sessions"]
            - TITLE_SOURCE_COLUMNS
            - {FOLDER_COLUMN}
        )
        assert await index_names(conn, "chat_sessions") == SEED_INDEXES
        user_index = (await index_definitions(conn, "chat_sessions"))[
            "idx_chat_sessions_user_id_updated"
        ]
        assert "WHERE" in user_index
        assert "user_id IS NOT NULL" in user_index
        assert await snapshot(conn) == before

    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        await assert_schema_matches_tables(conn)
        # Pins do not survive a downgrade: the column is gone, so everyone starts unpinned.
        assert await pinned_by_id(conn) == dict.fromkeys(SESSION_IDS, False)
        assert await snapshot(conn) == before


async def test_downgrade_restores_the_seed_index_definitions(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url)
    await downgrade(fresh_url, METADATA_REVISION)
    async with fresh_engine.connect() as conn:
        definitions = await index_definitions(conn, "chat_sessions")
    assert_seed_index_definitions(backend, definitions)


# Keyset pagination of one user's sidebar: the page after the cursor position.
KEYSET_PAGE = sa.text(
    "SELECT session_id FROM chat_sessions"
    " WHERE user_id = :user_id AND active = :active"
    " AND (pinned, updated_at, id) < (:pinned, :updated_at, :id)"
    " ORDER BY pinned DESC, updated_at DESC, id DESC LIMIT 50"
).bindparams(
    sa.bindparam("user_id", type_=sa.Text()),
    sa.bindparam("active", type_=sa.Boolean()),
    sa.bindparam("pinned", type_=sa.Boolean()),
    sa.bindparam("updated_at", type_=UTCDateTime()),
    sa.bindparam("id", type_=sa.Uuid()),
)
sidebar_rows = sa.table(
    "chat_sessions",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("user_id", sa.Text()),
    sa.column("active", sa.Boolean()),
    sa.column("pinned", sa.Boolean()),
    sa.column("updated_at", UTCDateTime()),
)
# Enough rows that, with statistics, PostgreSQL's cheapest plan for a 50-row page is the
# index range scan (at a few hundred rows it prefers a bitmap scan and a sort).
KEYSET_ROWS = 2_000


def _sidebar_row(i: int) -> dict[str, Any]:
    return {
        "id": uuid.UUID(int=i + 1),
        "session_id": f"s-{i:05d}",
        "user_id": f"user-{i % 4}",
        "active": i % 5 != 0,
        "pinned": i % 7 == 0,
        # Pairs share a timestamp, so the id decides between them.
        "updated_at": T0 + timedelta(minutes=i // 2),
    }


def _key(row: dict[str, Any]) -> tuple[bool, datetime, uuid.UUID]:
    return (row["pinned"], row["updated_at"], row["id"])


async def test_keyset_page_is_a_range_scan_of_the_user_list_index(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url)
    rows = [_sidebar_row(i) for i in range(KEYSET_ROWS)]
    async with fresh_engine.begin() as conn:
        await conn.execute(sa.insert(sidebar_rows), rows)
        await conn.execute(sa.text("ANALYZE"))
    listed = sorted(
        (row for row in rows if row["user_id"] == "user-1" and row["active"]),
        key=_key,
        reverse=True,
    )
    # Near the end of the pinned sessions, so that the page goes on with unpinned ones.
    position = sum(row["pinned"] for row in listed) - 10
    cursor = listed[position]
    expected = [row["session_id"] for row in listed[position + 1 :][:50]]
    assert {row["pinned"] for row in listed[position + 1 :][:50]} == {True, False}
    assert len(expected) == 50
    params = {
        "user_id": "user-1",
        "active": True,
        "pinned": cursor["pinned"],
        "updated_at": cursor["updated_at"],
        "id": cursor["id"],
    }
    explain = "EXPLAIN" if backend == "postgresql" else "EXPLAIN QUERY PLAN"
    explain_page = sa.text(f"{explain} {KEYSET_PAGE.text}").bindparams(
        *KEYSET_PAGE._bindparams.values()
    )

    async with fresh_engine.connect() as conn:
        if backend == "postgresql":
            # Index scans only, whatever the costs of a sequential scan on this small table.
            await conn.execute(sa.text("SET enable_seqscan = off"))
            plan = [str(line) for line in (await conn.execute(explain_page, params)).scalars()]
        else:
            plan = [str(row[-1]) for row in await conn.execute(explain_page, params)]
        page = list((await conn.execute(KEYSET_PAGE, params)).scalars())

    assert page == expected
    text = "\n".join(plan)
    if backend == "postgresql":
        assert re.search(r"Index (Only )?Scan using idx_chat_sessions_user_list ", text), text
        assert "Sort" not in text, text
        # The cursor bounds the scan: a range of the index, not a filter over it.
        assert "Index Cond: ((user_id = " in text, text
        assert "ROW(pinned, updated_at, id) < ROW(" in text, text
    else:
        assert "USING INDEX idx_chat_sessions_user_list " in text, text
        assert "(pinned,updated_at,id)<(?,?,?)" in text, text
        assert "USE TEMP B-TREE" not in text, text
