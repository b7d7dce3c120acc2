"""Revision 0009_feedback on both databases: it adds the feedback table and nothing else, its
rows go with their message and session, and going back drops it, leaving the rest as it was."""

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.access import Caller
from app.feedback import service as feedback_service
from app.feedback.schemas import FeedbackRequest
from app.kit.db.tables import chat_feedback
from app.kit.db.types import utc_now
from app.sessions import service as session_service
from tests.db.helpers import (
    FEEDBACK_REVISION,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    column_names,
    down_revision_of,
    downgrade,
    index_names,
    table_names,
    upgrade,
)
from tests.db.test_tree_migration import seed_at_reply_lifecycle
from tests.services.helpers import message_rows

OPEN = Caller.open_mode()
OTHER_TABLES = ("chat_sessions", "chat_messages", "chat_search")
# A seeded session with replies (tests/db/seed.py).
SEEDED = "first-user-later"


async def snapshot(engine: AsyncEngine) -> dict[str, object]:
    """The tables and columns, and every session and message row."""
    async with engine.connect() as conn:
        sessions = await conn.execute(sa.text("SELECT * FROM chat_sessions ORDER BY session_id"))
        messages = await conn.execute(sa.text("SELECT * FROM chat_messages ORDER BY id"))
        return {
            "tables": await table_names(conn) - {"chat_feedback"},
            "columns": {t: await column_names(conn, t) for t in OTHER_TABLES},
            "sessions": [tuple(row) for row in sessions],
            "messages": [tuple(row) for row in messages],
        }


async def test_upgrade_adds_the_feedback_table_and_nothing_else(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_reply_lifecycle(fresh_url, fresh_engine)
    await upgrade(fresh_url, down_revision_of(FEEDBACK_REVISION))
    before = await snapshot(fresh_engine)

    await upgrade(fresh_url, FEEDBACK_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [FEEDBACK_REVISION]
        assert "chat_feedback" in await table_names(conn)
        assert await index_names(conn, "chat_feedback") == {
            "idx_chat_feedback_updated",
            "idx_chat_feedback_session",
        }
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(chat_feedback))
        ).scalar_one() == 0
    assert await snapshot(fresh_engine) == before
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_feedback_rows_are_checked_and_go_with_their_session(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_reply_lifecycle(fresh_url, fresh_engine)
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        reply = next(m for m in await message_rows(database, SEEDED) if m["role"] == "assistant")
        await feedback_service.set_feedback(
            database, OPEN, SEEDED, reply["id"], FeedbackRequest(rating="down", comment="Wrong")
        )
        detail = await session_service.get_session(database, OPEN, SEEDED)
        [rated] = [m for m in detail.messages if m.feedback is not None]
        assert rated.id == reply["id"]
        assert rated.feedback is not None
        assert (rated.feedback.rating, rated.feedback.comment) == ("down", "Wrong")

        # The database itself refuses a rating that is not up or down.
        with pytest.raises(IntegrityError):
            async with database.write() as conn:
                await conn.execute(
                    sa.update(chat_feedback).values(rating="meh", updated_at=utc_now())
                )

        await session_service.delete_session(database, OPEN, SEEDED)
    async with fresh_engine.connect() as conn:
        count = sa.select(sa.func.count()).select_from(chat_feedback)
        assert (await conn.execute(count)).scalar_one() == 0


async def test_downgrade_drops_the_table_and_upgrade_brings_it_back(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_reply_lifecycle(fresh_url, fresh_engine)
    await upgrade(fresh_url, down_revision_of(FEEDBACK_REVISION))
    before = await snapshot(fresh_engine)
    await upgrade(fresh_url, FEEDBACK_REVISION)
    async with app_database(fresh_url) as database:
        reply = next(m for m in await message_rows(database, SEEDED) if m["role"] == "assistant")
        # The row as this revision has it (later ones add columns the write path fills).
        async with database.write() as conn:
            await conn.execute(
                sa.insert(chat_feedback).values(
                    message_id=reply["id"],
                    session_id=SEEDED,
                    user_id=None,
                    rating="up",
                    created_at=utc_now(),
                    updated_at=utc_now(),
                )
            )

    await downgrade(fresh_url, down_revision_of(FEEDBACK_REVISION))

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [down_revision_of(FEEDBACK_REVISION)]
        assert "chat_feedback" not in await table_names(conn)
    # The messages rated are kept; only their ratings are gone.
    assert await snapshot(fresh_engine) == before

    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
