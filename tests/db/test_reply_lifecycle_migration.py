"""Revision 0006 (the reply lifecycle) on both databases: it adds its two tables and nothing
else, and going back finishes the replies still generating as interrupted."""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.db.tables import chat_processes, chat_replies_generating
from app.kit.db.types import JSONDocument, UTCDateTime
from tests.db.helpers import (
    OWNED_WORDS_REVISION,
    REPLY_LIFECYCLE_REVISION,
    alembic_versions,
    assert_schema_matches_tables,
    column_names,
    downgrade,
    table_names,
    upgrade,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
NEW_TABLES = {"chat_processes", "chat_replies_generating"}

# The two tables as revision 0006 has them (later revisions add columns).
chat_sessions = sa.table(
    "chat_sessions",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("active", sa.Boolean()),
    sa.column("metadata", JSONDocument),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("message_count", sa.Integer()),
    sa.column("pinned", sa.Boolean()),
)
chat_messages = sa.table(
    "chat_messages",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("seq", sa.Integer()),
    sa.column("role", sa.Text()),
    sa.column("content", sa.Text()),
    sa.column("metadata", JSONDocument),
    sa.column("created_at", UTCDateTime()),
)


async def test_upgrade_adds_only_the_two_tables(fresh_url: str, fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_url, OWNED_WORDS_REVISION)
    async with fresh_engine.connect() as conn:
        tables_before = await table_names(conn)
        columns_before = {
            t: await column_names(conn, t) for t in ("chat_sessions", "chat_messages")
        }

    await upgrade(fresh_url, REPLY_LIFECYCLE_REVISION)

    async with fresh_engine.connect() as conn:
        assert await table_names(conn) - tables_before == NEW_TABLES
        for name, columns in columns_before.items():
            assert await column_names(conn, name) == columns
    # The revisions after it end at app.kit.db.tables' schema.
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_downgrade_finishes_generating_replies_as_interrupted(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, REPLY_LIFECYCLE_REVISION)
    partial, empty, done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    process = uuid.uuid4()
    generating = {"provider": "echo", "model": "echo-1", "status": "generating"}
    async with fresh_engine.begin() as conn:
        await conn.execute(
            sa.insert(chat_sessions).values(
                id=uuid.uuid4(),
                session_id="s",
                active=True,
                metadata={},
                created_at=T0,
                updated_at=T0,
                message_count=4,
                pinned=False,
            )
        )
        for seq, (message_id, content, meta) in enumerate(
            [
                (uuid.uuid4(), "q", {}),
                (partial, "half a", generating),
                (empty, "", generating),
                (done, "whole", {"status": "complete"}),
            ],
            start=1,
        ):
            await conn.execute(
                sa.insert(chat_messages).values(
                    id=message_id,
                    session_id="s",
                    seq=seq,
                    role="user" if seq == 1 else "assistant",
                    content=content,
                    metadata=meta,
                    created_at=T0,
                )
            )
        await conn.execute(
            sa.insert(chat_processes).values(
                id=process, host="h", pid=1, started_at=T0, heartbeat_at=T0
            )
        )
        await conn.execute(
            sa.insert(chat_replies_generating),
            [{"message_id": m, "process_id": process, "started_at": T0} for m in (partial, empty)],
        )

    await downgrade(fresh_url, OWNED_WORDS_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [OWNED_WORDS_REVISION]
        assert NEW_TABLES.isdisjoint(await table_names(conn))
        rows = await conn.execute(sa.select(chat_messages.c.id, chat_messages.c.metadata))
        metadata = {row.id: row.metadata for row in rows}
    assert metadata[partial] == {
        **generating,
        "status": "incomplete",
        "finish_reason": "error",
        "error": "interrupted",
    }
    assert metadata[empty]["status"] == "failed"
    assert metadata[empty]["error"] == "interrupted"
    assert metadata[done] == {"status": "complete"}

    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
