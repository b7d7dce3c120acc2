"""The user_id revision on both databases, with data in place: every row of the four tables
takes its session's owner (NO_OWNER for a session without one), across several batches on
PostgreSQL, each its own transaction; the columns end NOT NULL; going back drops them and
keeps the rows."""

import asyncio
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import PROJECT_ROOT
from app.kit.db.tables import (
    NO_OWNER,
    chat_feedback,
    chat_messages,
    chat_replies_generating,
    chat_session_tags,
    chat_share_messages,
    chat_shares,
    chat_tags,
)
from tests.db.helpers import (
    USER_ID_REVISION,
    USER_ID_TABLES,
    alembic_versions,
    assert_schema_matches_tables,
    base_sessions,
    column_names,
    down_revision_of,
    downgrade,
    nullability,
    upgrade,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
# The sessions' owners (None: open mode without a user).
OWNERS = {"alice-s": "alice", "bob-s": "bob", "nobody-s": None}
# More messages than one batch of the migration (BATCH_ROWS = 10,000) holds.
MESSAGES_PER_SESSION = 8_500


def previous_revision() -> str:
    return down_revision_of(USER_ID_REVISION)


def _without_user_id(table: sa.Table) -> sa.TableClause:
    """`table` as it was before the revision (the insert must not name `user_id`)."""
    return sa.table(
        table.name, *(sa.column(c.name, c.type) for c in table.c if c.name != "user_id")
    )


async def seed(engine: AsyncEngine) -> dict[str, int]:
    """Rows of every kind at the previous revision; how many of each table."""
    messages: list[dict[str, Any]] = []
    async with engine.begin() as conn:
        for session_id, owner in OWNERS.items():
            await conn.execute(
                sa.insert(base_sessions).values(
                    id=uuid.uuid4(),
                    session_id=session_id,
                    user_id=owner,
                    active=True,
                    metadata={},
                    created_at=T0,
                    updated_at=T0,
                )
            )
            messages += [
                {
                    "id": uuid.uuid4(),
                    "session_id": session_id,
                    "seq": n,
                    "ordinal": n,
                    "role": "user" if n % 2 else "assistant",
                    "content": f"message {n}",
                    "metadata": {},
                    "created_at": T0,
                }
                for n in range(1, MESSAGES_PER_SESSION + 1)
            ]
        await conn.execute(sa.insert(_without_user_id(chat_messages)), messages)
        replies = [m for m in messages if m["ordinal"] == 2]
        await conn.execute(
            sa.insert(_without_user_id(chat_replies_generating)),
            [
                {"message_id": m["id"], "process_id": uuid.uuid4(), "started_at": T0}
                for m in replies
            ],
        )
        await conn.execute(
            sa.insert(chat_feedback),
            [
                {
                    "message_id": m["id"],
                    "session_id": m["session_id"],
                    "user_id": OWNERS[m["session_id"]],
                    "rating": "up",
                    "created_at": T0,
                    "updated_at": T0,
                }
                for m in replies
            ],
        )
        for session_id, owner in OWNERS.items():
            share_id = f"link-{session_id}"
            await conn.execute(
                sa.insert(chat_shares).values(
                    share_id=share_id,
                    session_id=session_id,
                    user_id=owner,
                    title="Shared",
                    created_at=T0,
                    expires_at=None,
                )
            )
            await conn.execute(
                sa.insert(_without_user_id(chat_share_messages)),
                [
                    {
                        "share_id": share_id,
                        "position": n,
                        "role": "user",
                        "content": "q",
                        "created_at": T0,
                    }
                    for n in (1, 2)
                ],
            )
            tag_id = uuid.uuid4()
            await conn.execute(
                sa.insert(chat_tags).values(
                    id=tag_id,
                    user_id=owner or NO_OWNER,
                    name="Work",
                    name_key="work",
                    created_at=T0,
                )
            )
            await conn.execute(
                sa.insert(_without_user_id(chat_session_tags)).values(
                    session_id=session_id, tag_id=tag_id, position=0
                )
            )
    return await row_counts(engine)


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table.name: int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )
            for table in (*USER_ID_TABLES, chat_feedback, chat_shares)
        }


# Each table's owners, per session.
_OWNERS_FOUND = {
    "chat_messages": "SELECT session_id, user_id FROM chat_messages",
    "chat_replies_generating": "SELECT m.session_id, r.user_id FROM chat_replies_generating r"
    " JOIN chat_messages m ON m.id = r.message_id",
    "chat_share_messages": "SELECT s.session_id, m.user_id FROM chat_share_messages m"
    " JOIN chat_shares s ON s.share_id = m.share_id",
    "chat_session_tags": "SELECT session_id, user_id FROM chat_session_tags",
}


async def test_upgrade_fills_user_id_from_each_rows_session(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, previous_revision())
    counts = await seed(fresh_engine)

    await upgrade(fresh_url, USER_ID_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [USER_ID_REVISION]
        expected = {session_id: owner or NO_OWNER for session_id, owner in OWNERS.items()}
        for table, query in _OWNERS_FOUND.items():
            found = {tuple(row) for row in await conn.execute(sa.text(query))}
            assert found == set(expected.items()), table
            assert (await nullability(conn, table))["user_id"] is False, table
        if conn.dialect.name == "postgresql":
            # Each batch was its own transaction: the messages' row versions were written by
            # as many transactions as there were batches (ceil(25,500 / 10,000)).
            writers = await conn.execute(
                sa.text("SELECT count(DISTINCT xmin::text) FROM chat_messages")
            )
            assert writers.scalar_one() == 3
    assert await row_counts(fresh_engine) == counts

    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_downgrade_drops_the_columns_and_keeps_the_rows(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, previous_revision())
    counts = await seed(fresh_engine)
    async with fresh_engine.connect() as conn:
        columns_before = {
            table.name: await column_names(conn, table.name) for table in USER_ID_TABLES
        }
    await upgrade(fresh_url, USER_ID_REVISION)

    await downgrade(fresh_url, previous_revision())

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [previous_revision()]
        for table in USER_ID_TABLES:
            assert await column_names(conn, table.name) == columns_before[table.name], table.name
    assert await row_counts(fresh_engine) == counts
    # And up again.
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_replicas_migrating_together_migrate_once(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    """The batches commit as they go, which ends the transaction lock of migrations/env.py;
    the session lock taken instead keeps a second upgrade waiting until the first is done."""
    if backend != "postgresql":
        pytest.skip("SQLite has no advisory lock: one process migrates it")
    await upgrade(fresh_url, previous_revision())
    counts = await seed(fresh_engine)

    # Processes, as replicas are: Alembic's `context` and `op` are one per process.
    async def alembic_upgrade() -> int:
        process = await asyncio.create_subprocess_exec(
            str(PROJECT_ROOT / ".venv" / "bin" / "alembic"),
            "upgrade",
            USER_ID_REVISION,
            cwd=PROJECT_ROOT,
            env={**os.environ, "DATABASE_URL": fresh_url},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await process.wait()

    assert await asyncio.gather(*(alembic_upgrade() for _ in range(3))) == [0, 0, 0]

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [USER_ID_REVISION]
    assert await row_counts(fresh_engine) == counts
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_an_interrupted_upgrade_is_run_again(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    """What an upgrade stopped half-way on PostgreSQL leaves (its steps commit as they go): a
    column, some rows filled, a constraint; running it again finishes the job."""
    if backend != "postgresql":
        pytest.skip("SQLite's upgrade is one transaction")
    await upgrade(fresh_url, previous_revision())
    counts = await seed(fresh_engine)
    async with fresh_engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE chat_messages ADD COLUMN user_id TEXT"))
        await conn.execute(
            sa.text("UPDATE chat_messages SET user_id = 'alice' WHERE session_id = 'alice-s'")
        )
        await conn.execute(
            sa.text(
                "ALTER TABLE chat_messages ADD CONSTRAINT ck_chat_messages_user_id_not_null"
                " CHECK (user_id IS NOT NULL) NOT VALID"
            )
        )

    await upgrade(fresh_url, USER_ID_REVISION)

    async with fresh_engine.connect() as conn:
        found = {tuple(row) for row in await conn.execute(sa.text(_OWNERS_FOUND["chat_messages"]))}
        assert found == {(s, owner or NO_OWNER) for s, owner in OWNERS.items()}
    assert await row_counts(fresh_engine) == counts
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
