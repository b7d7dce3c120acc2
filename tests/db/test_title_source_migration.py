"""Revision 0010_title_source: who wrote each existing title, backfilled (a title that is not
the first user message's was the user's); downgrade drops it. Both databases, and the
Supabase SQL export."""

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.auth.access import Caller
from app.sessions import service as session_service
from tests.conftest import DatabaseFactory, make_settings
from tests.db.helpers import (
    BASE_REVISION,
    METADATA_REVISION,
    TITLE_SOURCE_COLUMNS,
    TITLE_SOURCE_REVISION,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    column_names,
    down_revision_of,
    downgrade,
    head_revision,
    plain_engine,
    upgrade,
)
from tests.db.seed import SEED, T0, SeedMessage, SeedSession, insert_base_data
from tests.db.test_sql_export import backfill_with_exported_sql, offline_sql, run_script

OPEN = Caller.open_mode()

# Titles as revision 0002 backfilled them (the seed's), and renames written before 0008.
TITLE_SEED = (
    *SEED,
    SeedSession(
        "renamed",
        "dave",
        T0,
        (
            SeedMessage(1, "user", "What is the capital of France?", T0),
            SeedMessage(2, "assistant", "Paris.", T0 + timedelta(minutes=1)),
        ),
    ),
    SeedSession(
        "renamed-to-a-later-message",
        "dave",
        T0,
        (
            SeedMessage(1, "user", "First question", T0),
            SeedMessage(2, "user", "Second question", T0 + timedelta(minutes=1)),
        ),
    ),
)
RENAMES = {"renamed": "Geography quiz", "renamed-to-a-later-message": "Second question"}

# The revision before this one (whatever was merged in between).
PREVIOUS_REVISION = down_revision_of(TITLE_SOURCE_REVISION)


async def seed_with_renames(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_base_data(conn, TITLE_SEED)


async def rename(engine: AsyncEngine) -> None:
    """Renames as the code before 0008 wrote them: the title only."""
    async with engine.begin() as conn:
        for session_id, title in RENAMES.items():
            await conn.execute(
                sa.text("UPDATE chat_sessions SET title = :title WHERE session_id = :id"),
                {"title": title, "id": session_id},
            )


async def title_sources(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT session_id, title_source FROM chat_sessions"))
        return {str(session_id): str(source) for session_id, source in rows}


async def stored_titles(conn: AsyncConnection) -> dict[str, str | None]:
    rows = await conn.execute(sa.text("SELECT session_id, title FROM chat_sessions"))
    return {str(session_id): title for session_id, title in rows}


EXPECTED_SOURCES = {
    # Titled by their first user message (after a system prompt and a reply, for the first),
    # or cut grapheme-safe (emoji): the seed's.
    "first-user-later": "message",
    "long-last": "message",
    "emoji": "message",
    # No user message, no title.
    "empty": "message",
    "no-user": "message",
    "renamed": "user",
    "renamed-to-a-later-message": "user",
}


async def test_upgrade_backfills_who_wrote_each_title(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, BASE_REVISION)
    await seed_with_renames(fresh_engine)
    await upgrade(fresh_url, PREVIOUS_REVISION)
    await rename(fresh_engine)

    await upgrade(fresh_url, TITLE_SOURCE_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [TITLE_SOURCE_REVISION]
    assert await title_sources(fresh_engine) == EXPECTED_SOURCES
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
    async with app_database(fresh_url) as database:
        page = await session_service.get_sessions_list(database, OPEN, user_id="dave", page_size=10)
    assert {(s.session_id, s.title, s.title_source) for s in page.sessions} == {
        ("renamed", "Geography quiz", "user"),
        ("renamed-to-a-later-message", "Second question", "user"),
    }


async def test_only_the_three_sources_can_be_stored(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, BASE_REVISION)
    await seed_with_renames(fresh_engine)
    await upgrade(fresh_url)

    for source in ("message", "model", "user"):
        async with fresh_engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE chat_sessions SET title_source = :s WHERE session_id = 'renamed'"),
                {"s": source},
            )
    with pytest.raises(IntegrityError):
        async with fresh_engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE chat_sessions SET title_source = 'robot' WHERE session_id = 'renamed'"
                )
            )


async def test_downgrade_drops_the_column_and_keeps_the_titles(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, BASE_REVISION)
    await seed_with_renames(fresh_engine)
    await upgrade(fresh_url, PREVIOUS_REVISION)
    await rename(fresh_engine)
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        titles = await stored_titles(conn)

    await downgrade(fresh_url, PREVIOUS_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [PREVIOUS_REVISION]
        assert TITLE_SOURCE_COLUMNS.isdisjoint(await column_names(conn, "chat_sessions"))
        assert await stored_titles(conn) == titles
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        await assert_schema_matches_tables(conn)
    assert await title_sources(fresh_engine) == EXPECTED_SOURCES


def test_export_adds_the_column_with_its_check() -> None:
    sql = offline_sql(f"{PREVIOUS_REVISION}:{TITLE_SOURCE_REVISION}")
    assert (
        "ALTER TABLE chat_sessions ADD COLUMN title_source TEXT DEFAULT 'message' NOT NULL"
        " CONSTRAINT ck_chat_sessions_title_source"
        " CHECK (title_source IN ('message', 'model', 'user'));"
    ) in sql
    assert "UPDATE chat_sessions AS s SET title_source = 'user'" in sql


async def test_exported_upgrade_backfills_who_wrote_each_title(
    database_factory: DatabaseFactory,
) -> None:
    url = await database_factory.create("postgresql")
    await backfill_with_exported_sql(url, TITLE_SEED)
    engine = plain_engine(make_settings(url).database_url)
    try:
        await run_script(url, offline_sql(f"{METADATA_REVISION}:{PREVIOUS_REVISION}"))
        await rename(engine)

        await run_script(url, offline_sql(f"{PREVIOUS_REVISION}:head"))

        async with engine.connect() as conn:
            assert await alembic_versions(conn) == [head_revision()]
            await assert_schema_matches_tables(conn)
        # The export's titles are cut by code point (revision 0002's SQL), and compared with
        # the same cut: the emoji session's title is the seed's there too.
        assert await title_sources(engine) == EXPECTED_SOURCES
    finally:
        await engine.dispose()
