"""`alembic upgrade head --sql`: the PostgreSQL script for Supabase's SQL editor or `psql -f`."""

import io

import asyncpg
import pytest
from alembic import command

from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.kit.text import make_title
from app.messages.schemas import ChatRequest
from app.messages.service import process_chat
from app.replies.generation import ReplyTasks
from app.sessions.service import get_session, get_sessions_list
from tests.conftest import DatabaseFactory, make_settings
from tests.db.helpers import (
    BASE_REVISION,
    METADATA_REVISION,
    SEARCH_REVISION,
    SHARES_REVISION,
    SIDEBAR_REVISION,
    alembic_versions,
    assert_schema_matches_tables,
    down_revision_of,
    head_revision,
    pinned_by_id,
    plain_engine,
    upgrade,
)
from tests.db.seed import (
    FAMILY,
    SEED,
    T0,
    SeedMessage,
    SeedSession,
    expected_by_id,
    insert_base_data,
    session_metadata_by_id,
)
from tests.db.test_search_migration import expected_entries, stored_entries
from tests.services.helpers import expected_branch_previews, message_rows, session_row

OPEN = Caller.open_mode()

OFFLINE_URL = "postgresql://offline/chat"


def offline_sql(revisions: str) -> str:
    """What `alembic upgrade <revisions> --sql` prints, without connecting anywhere."""
    output = io.StringIO()
    config = migrate.alembic_config(OFFLINE_URL)
    config.output_buffer = output
    command.upgrade(config, revisions, sql=True)
    return output.getvalue()


async def run_script(url: str, sql: str) -> None:
    """Run a multi-statement script as psql or the SQL editor would (simple query protocol)."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
async def postgres_url(database_factory: DatabaseFactory) -> str:
    """A fresh empty PostgreSQL database, as the plain URL psql would take."""
    return await database_factory.create("postgresql")


def test_export_contains_the_whole_schema() -> None:
    sql = offline_sql("head")
    assert sql.lstrip().startswith("BEGIN;")
    assert sql.rstrip().endswith("COMMIT;")
    assert "CREATE TABLE chat_sessions (" in sql
    assert "CREATE TABLE chat_messages (" in sql
    assert "CREATE TABLE chat_feedback (" in sql
    assert "ALTER TABLE chat_sessions ADD COLUMN pinned BOOLEAN DEFAULT false NOT NULL;" in sql
    assert (
        "CREATE INDEX idx_chat_sessions_user_list ON chat_sessions "
        "(user_id, active, pinned DESC, updated_at DESC, id DESC);"
    ) in sql
    assert (
        "CREATE INDEX idx_chat_sessions_list ON chat_sessions "
        "(active, pinned DESC, updated_at DESC, id DESC);"
    ) in sql
    assert f"version_num='{head_revision()}'" in sql


def test_export_of_the_metadata_revision_creates_the_seed_indexes() -> None:
    sql = offline_sql(f"{BASE_REVISION}:{METADATA_REVISION}")
    assert sql.lstrip().startswith("BEGIN;")
    assert sql.rstrip().endswith("COMMIT;")
    assert "CREATE INDEX idx_chat_sessions_updated_at ON chat_sessions (updated_at DESC);" in sql
    assert (
        "CREATE INDEX idx_chat_sessions_user_id_updated ON chat_sessions "
        "(user_id, updated_at DESC) WHERE user_id IS NOT NULL;"
    ) in sql
    assert f"version_num='{METADATA_REVISION}'" in sql


async def test_exported_sql_builds_a_working_database(postgres_url: str) -> None:
    await run_script(postgres_url, offline_sql("head"))

    url = make_settings(postgres_url).database_url
    engine = plain_engine(url)
    try:
        async with engine.connect() as conn:
            assert await alembic_versions(conn) == [head_revision()]
            await assert_schema_matches_tables(conn)
    finally:
        await engine.dispose()
    # Alembic agrees that nothing is left to do.
    await upgrade(url)

    database = Database(create_engine(make_settings(postgres_url)))
    try:
        request = ChatRequest(message="Hello   from\nthe SQL editor", user_id="user-1")
        reply = await process_chat(
            database, EchoAssistant(), OPEN, request, history_max_messages=10, tasks=ReplyTasks()
        )
        page = await get_sessions_list(database, OPEN, page=1, page_size=10, user_id="user-1")
        detail = await get_session(database, OPEN, reply.session_id)
    finally:
        await database.dispose()
    assert page.total == 1
    [summary] = page.sessions
    assert summary.session_id == reply.session_id
    assert summary.title == "Hello from the SQL editor"
    assert summary.message_count == 2
    assert [m.role for m in detail.messages] == ["user", "assistant"]
    assert detail.messages[1].id == reply.message_id


async def backfill_with_exported_sql(url: str, seed: tuple[SeedSession, ...]) -> None:
    """Base schema and data first, then the exported upgrade to revision 0002 (the one that
    backfills), all through plain SQL."""
    await run_script(url, offline_sql(BASE_REVISION))
    engine = plain_engine(make_settings(url).database_url)
    try:
        async with engine.begin() as conn:
            await insert_base_data(conn, seed)
    finally:
        await engine.dispose()
    await run_script(url, offline_sql(f"{BASE_REVISION}:{METADATA_REVISION}"))


async def test_exported_backfill_matches_the_write_path(postgres_url: str) -> None:
    await backfill_with_exported_sql(postgres_url, SEED)

    engine = plain_engine(make_settings(postgres_url).database_url)
    try:
        async with engine.connect() as conn:
            assert await alembic_versions(conn) == [METADATA_REVISION]
            backfilled = await session_metadata_by_id(conn)
    finally:
        await engine.dispose()
    expected = expected_by_id(SEED)
    # Documented in the migration: plain SQL cuts by code point, so it may split a grapheme
    # cluster where the write path drops it whole. Everything else must be identical.
    assert backfilled.pop("emoji") == {
        **expected.pop("emoji"),
        "title": "x" * 45 + FAMILY[:2] + "...",
        "last_message": "y" * 95 + FAMILY[:2] + "...",
    }
    assert backfilled == expected


NBSP_SEED = (
    SeedSession(
        "nbsp",
        None,
        T0,
        (SeedMessage(1, "user", "Prix\u00a0: 20\u00a0€\u00a0\u00a0par mois ?\u00a0", T0),),
    ),
)


async def test_exported_backfill_collapses_unicode_whitespace_like_the_write_path(
    postgres_url: str,
) -> None:
    await backfill_with_exported_sql(postgres_url, NBSP_SEED)

    engine = plain_engine(make_settings(postgres_url).database_url)
    try:
        async with engine.connect() as conn:
            backfilled = await session_metadata_by_id(conn)
    finally:
        await engine.dispose()
    assert make_title(NBSP_SEED[0].messages[0].content) == "Prix : 20 € par mois ?"
    assert backfilled == expected_by_id(NBSP_SEED)


async def test_exported_upgrade_to_head_keeps_backfilled_sessions_unpinned(
    postgres_url: str,
) -> None:
    await backfill_with_exported_sql(postgres_url, SEED)
    engine = plain_engine(make_settings(postgres_url).database_url)
    try:
        async with engine.connect() as conn:
            backfilled = await session_metadata_by_id(conn)

        await run_script(postgres_url, offline_sql(f"{METADATA_REVISION}:head"))

        async with engine.connect() as conn:
            assert await alembic_versions(conn) == [head_revision()]
            await assert_schema_matches_tables(conn)
            assert await pinned_by_id(conn) == dict.fromkeys(backfilled, False)
            assert await session_metadata_by_id(conn) == backfilled
    finally:
        await engine.dispose()
    assert set(backfilled) == {session.session_id for session in SEED}


def test_export_of_the_search_revision_creates_and_fills_the_index() -> None:
    sql = offline_sql(f"{SIDEBAR_REVISION}:{SEARCH_REVISION}")
    assert "CREATE TABLE chat_search (" in sql
    assert "document TSVECTOR NOT NULL" in sql
    assert sql.count("INSERT INTO chat_search ") == 2
    assert "CREATE INDEX idx_chat_search_user ON chat_search (user_id);" in sql
    assert "CREATE INDEX idx_chat_search_document ON chat_search USING gin (document);" in sql
    # The index is built after the backfill, not grown row by row.
    assert sql.index("INSERT INTO chat_search ") < sql.index("CREATE INDEX idx_chat_search")


async def test_exported_upgrade_indexes_existing_sessions_for_search(postgres_url: str) -> None:
    await backfill_with_exported_sql(postgres_url, SEED)

    await run_script(postgres_url, offline_sql(f"{METADATA_REVISION}:head"))

    engine = plain_engine(make_settings(postgres_url).database_url)
    try:
        async with engine.connect() as conn:
            assert await alembic_versions(conn) == [head_revision()]
            await assert_schema_matches_tables(conn)
            stored = await stored_entries(conn)
            expected = await expected_entries(conn)
    finally:
        await engine.dispose()
    # Documented in the migration: plain SQL does not cut long words, so the 45 x's of the
    # emoji session are one longer word there. ASCII text is indexed exactly as the write
    # path indexes it.
    emoji = {key for key in expected if key[0] == "emoji"}
    assert {key for key in stored if key[0] == "emoji"} == emoji
    assert {k: v for k, v in stored.items() if k not in emoji} == {
        k: v for k, v in expected.items() if k not in emoji
    }
    assert ("first-user-later", 0) in stored

    database = Database(create_engine(make_settings(postgres_url)))
    try:
        found = {
            q: [
                summary.session_id
                for summary in (
                    await get_sessions_list(database, OPEN, user_id=None, query=q)
                ).sessions
            ]
            for q in ("migrate database downtime", "helpful", "step by step", "xxxxx", "nothing")
        }
    finally:
        await database.dispose()
    assert found == {
        "migrate database downtime": ["first-user-later"],
        "helpful": ["first-user-later"],
        "step by step": ["long-last"],
        "xxxxx": ["emoji"],
        "nothing": [],
    }


async def test_exported_upgrade_makes_existing_sessions_single_branches(postgres_url: str) -> None:
    """Revision 0007 in plain SQL: parents, ordinals, current leaves, counts and previews as
    online (whitespace collapsed, long text cut; a cut could fall inside a grapheme cluster,
    which the seed's leaves avoid: a leaf's preview is the session's last_message)."""
    await backfill_with_exported_sql(postgres_url, SEED)

    await run_script(postgres_url, offline_sql(f"{METADATA_REVISION}:head"))

    database = Database(create_engine(make_settings(postgres_url)))
    try:
        for seeded in SEED:
            session = await session_row(database, seeded.session_id)
            messages = await message_rows(database, seeded.session_id)
            assert [m["ordinal"] for m in messages] == sorted(m.seq for m in seeded.messages)
            parents = [None, *(m["id"] for m in messages)][: len(messages)]
            assert [m["parent_id"] for m in messages] == parents
            assert session["current_leaf_id"] == (messages[-1]["id"] if messages else None)
            assert session["node_count"] == session["message_count"] == len(messages)
            expected = expected_branch_previews(messages)
            if messages:
                expected[-1] = session["last_message"]
            assert [m["branch_preview"] for m in messages] == expected, seeded.session_id
    finally:
        await database.dispose()


def test_export_of_the_share_links_revision_creates_its_cascading_tables() -> None:
    sql = offline_sql(f"{down_revision_of(SHARES_REVISION)}:{SHARES_REVISION}")
    assert "CREATE TABLE chat_shares (" in sql
    assert "CREATE TABLE chat_share_messages (" in sql
    assert sql.count("ON DELETE CASCADE") == 2
    assert f"version_num='{SHARES_REVISION}'" in sql
