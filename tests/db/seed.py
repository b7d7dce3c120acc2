"""Data written before revision 0002_session_metadata, and what its backfill must make of it."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.text import make_preview, make_title
from tests.db.helpers import base_messages, base_sessions, session_metadata

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
# One grapheme cluster of 7 code points: woman ZWJ woman ZWJ girl ZWJ boy.
FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"


@dataclass(frozen=True)
class SeedMessage:
    seq: int
    role: str
    content: str
    created_at: datetime


@dataclass(frozen=True)
class SeedSession:
    session_id: str
    user_id: str | None
    updated_at: datetime
    messages: tuple[SeedMessage, ...] = ()

    def expected(self) -> dict[str, Any]:
        """What the backfill must produce: the write path's rules applied to the messages."""
        by_seq = sorted(self.messages, key=lambda message: message.seq)
        user_messages = [message for message in by_seq if message.role == "user"]
        return {
            "message_count": len(by_seq),
            "title": make_title(user_messages[0].content) if user_messages else None,
            "last_message": make_preview(by_seq[-1].content) if by_seq else None,
            "updated_at": max([self.updated_at, *(m.created_at for m in by_seq)]),
        }


LONG_FIRST_QUESTION = (
    "  How do I   migrate\n\n\ta   database\r\n without   downtime when the\t"
    "table has millions of rows?  "
)
LONG_ANSWER = "Here is a long answer.\n\n" + "Step by step, " * 10 + "\n  and done."

SEED = (
    # The first message is the system prompt, the first of two user messages comes third.
    SeedSession(
        "first-user-later",
        "alice",
        T0,
        (
            SeedMessage(4, "assistant", "Carefully.", T0 + timedelta(minutes=4)),
            SeedMessage(3, "user", LONG_FIRST_QUESTION, T0 + timedelta(minutes=3)),
            SeedMessage(1, "system", "You are a helpful assistant.", T0 + timedelta(minutes=1)),
            SeedMessage(2, "assistant", "Hi! What can I do for you?", T0 + timedelta(minutes=2)),
            SeedMessage(5, "user", "Thanks, that was it.", T0 + timedelta(minutes=5)),
        ),
    ),
    # The session's updated_at is later than every message: it must not move back.
    SeedSession(
        "long-last",
        None,
        T0 + timedelta(hours=2),
        (
            SeedMessage(1, "user", "Short question", T0 + timedelta(minutes=1)),
            SeedMessage(2, "assistant", LONG_ANSWER, T0 + timedelta(minutes=2)),
        ),
    ),
    # Emoji ZWJ sequences across both cut points; the newest message is not the last one.
    SeedSession(
        "emoji",
        "carol",
        T0,
        (
            SeedMessage(
                1, "user", "x" * 45 + FAMILY + " and then some more", T0 + timedelta(hours=1)
            ),
            SeedMessage(2, "assistant", "y" * 95 + FAMILY + " end", T0 + timedelta(minutes=5)),
        ),
    ),
    SeedSession("empty", "bob", T0 + timedelta(minutes=30)),
    SeedSession(
        "no-user",
        "alice",
        T0,
        (
            SeedMessage(1, "system", "System prompt only", T0 + timedelta(minutes=1)),
            SeedMessage(2, "assistant", "Hello! Send me a message.", T0 + timedelta(minutes=2)),
        ),
    ),
)


async def insert_base_data(conn: AsyncConnection, seed: tuple[SeedSession, ...]) -> None:
    """Insert with the base schema's columns only, as rows written before revision 0002."""
    await conn.execute(
        sa.insert(base_sessions),
        [
            {
                "id": uuid.uuid4(),
                "session_id": session.session_id,
                "user_id": session.user_id,
                "active": True,
                "metadata": {},
                "created_at": T0 - timedelta(days=1),
                "updated_at": session.updated_at,
            }
            for session in seed
        ],
    )
    rows = [
        {
            "id": uuid.uuid4(),
            "session_id": session.session_id,
            "seq": message.seq,
            "role": message.role,
            "content": message.content,
            "metadata": {},
            "created_at": message.created_at,
        }
        for session in seed
        for message in session.messages
    ]
    if rows:
        await conn.execute(sa.insert(base_messages), rows)


async def session_metadata_by_id(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    rows = await conn.execute(sa.select(session_metadata))
    return {row["session_id"]: dict(row) for row in rows.mappings()}


async def base_rows(conn: AsyncConnection, table: sa.TableClause) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(table).order_by(*table.c))
    return [dict(row) for row in rows.mappings()]


def expected_by_id(seed: tuple[SeedSession, ...]) -> dict[str, dict[str, Any]]:
    return {s.session_id: {"session_id": s.session_id, **s.expected()} for s in seed}
