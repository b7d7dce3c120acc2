"""Revision 0007_message_tree: existing sessions become single branches with the write path's
metadata; downgrade keeps each session's current branch. Both databases."""

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.text import make_preview
from app.messages import service as message_service
from app.sessions import service as session_service
from tests.db.helpers import (
    BASE_REVISION,
    REPLY_LIFECYCLE_REVISION,
    TREE_COLUMNS,
    TREE_REVISION,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    base_messages,
    column_names,
    downgrade,
    head_revision,
    upgrade,
)
from tests.db.seed import (
    SEED,
    T0,
    SeedMessage,
    SeedSession,
    insert_base_data,
    session_metadata_by_id,
)
from tests.db.test_search_migration import stored_entries
from tests.services.helpers import (
    assert_tree_matches_session,
    expected_branch_previews,
    fork,
    make_current,
    message_rows,
    session_row,
)

# Replies that failed (no text) in the middle and at the end: a message without text takes
# the preview of the text before it.
TREE_SEED = (
    *SEED,
    SeedSession(
        "failed-replies",
        "carol",
        T0,
        (
            SeedMessage(1, "user", "First   question", T0 + timedelta(minutes=1)),
            SeedMessage(2, "assistant", "", T0 + timedelta(minutes=2)),
            SeedMessage(3, "user", "Second\nquestion", T0 + timedelta(minutes=3)),
            SeedMessage(4, "assistant", " \n ", T0 + timedelta(minutes=4)),
        ),
    ),
)


async def seed_at_reply_lifecycle(url: str, engine: AsyncEngine) -> None:
    await upgrade(url, BASE_REVISION)
    async with engine.begin() as conn:
        await insert_base_data(conn, TREE_SEED)
    await upgrade(url, REPLY_LIFECYCLE_REVISION)


async def test_upgrade_makes_each_session_one_branch_with_the_write_paths_metadata(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_reply_lifecycle(fresh_url, fresh_engine)
    async with fresh_engine.connect() as conn:
        sessions_before = await session_metadata_by_id(conn)
        entries_before = await stored_entries(conn)

    await upgrade(fresh_url, TREE_REVISION)
    async with fresh_engine.connect() as conn:
        # Ordinal = seq, so the search index (keyed by ordinal now) is left as it was (until
        # 0015 rewrites its words).
        assert await stored_entries(conn) == entries_before

    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        await assert_schema_matches_tables(conn)
    async with app_database(fresh_url) as database:
        for seeded in TREE_SEED:
            session = await session_row(database, seeded.session_id)
            messages = await message_rows(database, seeded.session_id)
            by_seq = sorted(seeded.messages, key=lambda m: m.seq)
            assert [m["content"] for m in messages] == [m.content for m in by_seq]
            assert [m["ordinal"] for m in messages] == [m.seq for m in by_seq]
            parents = [None, *(m["id"] for m in messages)][: len(messages)]
            assert [m["parent_id"] for m in messages] == parents
            assert session["current_leaf_id"] == (messages[-1]["id"] if messages else None)
            assert session["node_count"] == session["message_count"] == len(messages)
            # The sidebar's fields are left as they were.
            before = sessions_before[seeded.session_id]
            for field in ("title", "last_message", "message_count", "updated_at"):
                assert session[field] == before[field], (seeded.session_id, field)
            # Previews as the write path makes them; the current leaf's is the sidebar's.
            expected = expected_branch_previews(messages)
            if messages:
                expected[-1] = session["last_message"]
            assert [m["branch_preview"] for m in messages] == expected, seeded.session_id
        failed = await message_rows(database, "failed-replies")
        assert [m["branch_preview"] for m in failed[:3]] == [
            "First question",
            "First question",
            "Second question",
        ]
        # 0002 backfilled last_message from the last message even without text.
        assert failed[-1]["branch_preview"] == make_preview(" \n ") == ""

        # The write path continues the branch from there.
        await message_service.save_message(
            database, session_id="failed-replies", role="user", content="Third", metadata={}
        )
        branch = await assert_tree_matches_session_after_migration(database, "failed-replies")
        assert [m["seq"] for m in branch] == [1, 2, 3, 4, 5]


async def assert_tree_matches_session_after_migration(
    database: Database, session_id: str
) -> list[dict[str, Any]]:
    """The tree's invariants, except the leaf previews that 0002 made from a message without
    text (tested above)."""
    session = await session_row(database, session_id)
    messages = await message_rows(database, session_id)
    assert [m["ordinal"] for m in messages] == list(range(1, len(messages) + 1))
    assert session["node_count"] == len(messages)
    assert session["current_leaf_id"] == messages[-1]["id"]
    assert session["last_message"] == messages[-1]["branch_preview"] == make_preview("Third")
    return messages


async def test_downgrade_keeps_each_sessions_current_branch(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_reply_lifecycle(fresh_url, fresh_engine)
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        # A fork that stays beside the current branch: dropped.
        await fork(database, "first-user-later", 2, ["an edit of the third", "and on"])
        # A fork that becomes the current branch: kept, and the messages it replaced dropped.
        kept_fork = await fork(
            database, "failed-replies", 1, ["searchable edit", "searchable more"]
        )
        await make_current(database, "failed-replies", kept_fork[-1])
        await assert_tree_matches_session(database, "failed-replies")
        kept = {
            session_id: [
                m.id
                for m in (
                    await session_service.get_session(database, Caller.open_mode(), session_id)
                ).messages
            ]
            for session_id in ("first-user-later", "failed-replies")
        }
        summaries = {
            s: await session_row(database, s) for s in ("first-user-later", "failed-replies")
        }

    await downgrade(fresh_url, REPLY_LIFECYCLE_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [REPLY_LIFECYCLE_REVISION]
        assert TREE_COLUMNS["chat_messages"].isdisjoint(await column_names(conn, "chat_messages"))
        assert TREE_COLUMNS["chat_sessions"].isdisjoint(await column_names(conn, "chat_sessions"))
        for session_id, ids in kept.items():
            result = await conn.execute(
                sa.select(base_messages.c.id, base_messages.c.seq)
                .where(base_messages.c.session_id == session_id)
                .order_by(base_messages.c.seq)
            )
            assert [(row.id, row.seq) for row in result] == [
                (message_id, seq) for seq, message_id in enumerate(ids, 1)
            ]
            session = (
                await conn.execute(
                    sa.text(
                        "SELECT message_count, last_message FROM chat_sessions"
                        " WHERE session_id = :s"
                    ),
                    {"s": session_id},
                )
            ).one()
            assert session.message_count == len(ids) == summaries[session_id]["message_count"]
            assert session.last_message == summaries[session_id]["last_message"]
        # The search entries of the messages dropped are gone; the others are keyed by seq.
        entries = await stored_entries(conn)
        assert {seq for (s, seq) in entries if s == "failed-replies"} == {0, 1, 2, 3}
        assert {seq for (s, seq) in entries if s == "first-user-later"} == {0, 1, 2, 3, 4, 5}

    # The old code's search finds the kept fork's text at its seq; upgrading again works.
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
    async with app_database(fresh_url) as database:
        branch = await assert_tree_matches_session(database, "failed-replies")
        assert [m["content"] for m in branch] == [
            "First   question",
            "searchable edit",
            "searchable more",
        ]
        listing = await session_service.get_sessions_list(
            database, Caller.open_mode(), user_id=None, query="searchable more"
        )
        assert [s.session_id for s in listing.sessions] == ["failed-replies"]
        assert listing.sessions[0].snippet is not None
        assert listing.sessions[0].snippet == "searchable more"
