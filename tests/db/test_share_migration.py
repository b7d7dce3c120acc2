"""The share-links revision on both databases: it adds its two tables and nothing else, their
foreign keys cascade (a deleted session takes its links, a deleted link its messages), and
going back drops them."""

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.db.engine import Database
from app.kit.db.tables import chat_share_messages, chat_shares
from tests.db.helpers import (
    SHARE_TABLES,
    SHARES_REVISION,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    column_names,
    down_revision_of,
    downgrade,
    insert_base_session,
    table_names,
    upgrade,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
NEW_TABLES = {table.name for table in SHARE_TABLES}


def previous_revision() -> str:
    return down_revision_of(SHARES_REVISION)


async def insert_session_and_share(
    database: Database, session_id: str, share_id: str, *, at_head: bool = False
) -> None:
    """A session (its columns of revision 0001; the later ones take their defaults), a link to
    it and the link's two messages (with their `user_id` at the head revision)."""
    owner = {"user_id": "alice"} if at_head else {}
    async with database.write() as conn:
        await insert_base_session(conn, session_id, at=T0)
        await conn.execute(
            sa.insert(chat_shares).values(
                share_id=share_id,
                session_id=session_id,
                user_id="alice",
                title="Shared",
                created_at=T0,
                expires_at=None,
            )
        )
        await conn.execute(
            sa.insert(chat_share_messages),
            [
                {
                    "share_id": share_id,
                    "position": position,
                    "role": role,
                    "content": content,
                    "created_at": T0,
                }
                | owner
                for position, role, content in ((1, "user", "q"), (2, "assistant", "a"))
            ],
        )


async def count(database: Database, table: sa.Table) -> int:
    async with database.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def test_upgrade_adds_only_the_two_tables(fresh_url: str, fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_url, previous_revision())
    async with fresh_engine.connect() as conn:
        tables_before = await table_names(conn)
        columns_before = {
            name: await column_names(conn, name)
            for name in tables_before
            if name.startswith("chat_")
        }

    await upgrade(fresh_url, SHARES_REVISION)

    async with fresh_engine.connect() as conn:
        assert await table_names(conn) - tables_before == NEW_TABLES
        for name, columns in columns_before.items():
            assert await column_names(conn, name) == columns, name
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_links_go_with_their_session_and_messages_with_their_link(
    fresh_url: str,
) -> None:
    await upgrade(fresh_url)
    # The application's engine: on SQLite it turns foreign keys on for every connection.
    async with app_database(fresh_url) as database:
        await insert_session_and_share(database, "s", "link-of-s", at_head=True)
        await insert_session_and_share(database, "t", "link-of-t", at_head=True)
        await insert_session_and_share(database, "u", "link-of-u", at_head=True)
        assert await count(database, chat_share_messages) == 6

        async with database.write() as conn:
            await conn.execute(sa.text("DELETE FROM chat_sessions WHERE session_id = 's'"))
            await conn.execute(sa.delete(chat_shares).where(chat_shares.c.share_id == "link-of-t"))

        async with database.read() as conn:
            left = await conn.execute(sa.select(chat_shares.c.share_id))
            assert {row.share_id for row in left} == {"link-of-u"}
            owners = await conn.execute(sa.select(chat_share_messages.c.share_id).distinct())
            assert {row.share_id for row in owners} == {"link-of-u"}


async def test_downgrade_drops_the_tables(fresh_url: str, fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_url, SHARES_REVISION)
    async with app_database(fresh_url) as database:
        await insert_session_and_share(database, "s", "link-of-s")

    await downgrade(fresh_url, previous_revision())

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [previous_revision()]
        assert NEW_TABLES.isdisjoint(await table_names(conn))
        assert "chat_sessions" in await table_names(conn)
    # And up again: the tables come back, empty.
    await upgrade(fresh_url, SHARES_REVISION)
    async with fresh_engine.connect() as conn:
        assert await table_names(conn) >= NEW_TABLES
        rows = await conn.execute(sa.select(sa.func.count()).select_from(chat_shares))
        assert rows.scalar_one() == 0
