"""Appending messages: the seed's write algorithm beside ours, in one process, on one database.

The seed (docs/SESSIONS_LIST_IMPLEMENTATION.md, `update_session_metadata`) stored a message,
then re-derived the session's metadata from all of its messages: COUNT(*) of the session, its
first user message (the title), its last message (the preview), and an UPDATE. Ours
(`app.messages.service.save_message` -> `app.messages.queries.append_message`) updates the metadata
incrementally: `INSERT ... SELECT` from the locked session row (parent, seq, ordinal), then
`UPDATE chat_sessions` (current leaf, counts, preview), and it also adds the
message to the search index (a `chat_search` row; on SQLite its FTS5 trigger), which the seed
had no equivalent of: ours does more work per message than the seed's algorithm.

Variants, each one transaction per message, run interleaved in rounds on the same sessions:

* seed, as written: the seed's statements through the bare driver, ordering by `created_at`
  as it did (it had no sequence number); the INSERT takes `MAX(ordinal) + 1` as the message's
  seq and ordinal, and the UPDATE also sets `node_count` and `current_leaf_id`, which the seed
  did not need but this schema does (so that the variants can write to the same sessions);
* seed, indexed: the same, ordering by `ordinal` (served by the `(session_id, ordinal)`
  index), the most favourable reading of the seed on this schema;
* seed, service stack: the seed as written, through `app.kit.db.engine.Database` (SQLAlchemy Core
  on the application's tables and types), i.e. on the same stack as ours;
* ours, raw SQL: the exact statements `save_message` sends (recorded), through the bare driver;
* ours, service code: `save_message` itself, through `app.kit.db.engine.Database` (SQLAlchemy).
"""

import json
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from app.domain import Role
from app.kit.db.engine import Database
from app.kit.db.tables import chat_messages, chat_sessions
from app.kit.db.types import utc_now
from app.kit.text import make_preview, make_title
from app.messages.service import save_message
from bench.sqlcapture import Recorder, WriteTemplate, write_postgresql, write_sqlite

USER_TEXT = "How do I issue a partial refund on an order that was paid by card last week?"
ASSISTANT_TEXT = (
    "Open the order in the dashboard, choose Refund, and enter the amount to return. A "
    "partial refund keeps the order open; the customer sees the money in five to ten days."
)
ASSISTANT_METADATA: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4o-mini",
    "status": "complete",
    "finish_reason": "stop",
    "usage": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876},
    "latency": {"first_token_ms": 412, "total_ms": 1630},
    "sources": [],
}

VARIANTS = {
    "seed_created_at": "seed as written, raw driver",
    "seed_seq": "seed on the ordinal index, raw driver",
    "ours_raw": "ours, raw driver (same statements)",
    "seed_service": "seed as written, service stack",
    "ours_service": "ours, service code (save_message)",
}


def _message(k: int) -> tuple[Role, str, dict[str, Any]]:
    """The k-th message written: a user message, then the assistant's reply, and so on."""
    if k % 2 == 0:
        return "user", USER_TEXT, {}
    return "assistant", ASSISTANT_TEXT, ASSISTANT_METADATA


def _seed_sql(order: str, placeholder: Callable[[int], str], json_cast: str) -> list[str]:
    """INSERT, COUNT, first user message, last message, UPDATE."""
    p = placeholder
    return [
        # `user_id` (migration 0013, not in the seed): the session's owner, as ours copies it.
        "INSERT INTO chat_messages "
        "(id, session_id, seq, ordinal, role, content, metadata, created_at, user_id) "
        f"SELECT {p(1)}, {p(2)}, n, n, {p(3)}, {p(4)}, {p(5)}{json_cast}, {p(6)}, "
        "COALESCE((SELECT user_id FROM chat_sessions "
        f"WHERE session_id = {p(7)}), '') "
        "FROM (SELECT COALESCE(MAX(ordinal), 0) + 1 AS n FROM chat_messages "
        f"WHERE session_id = {p(7)}) AS next",
        f"SELECT COUNT(*) FROM chat_messages WHERE session_id = {p(1)}",
        f"SELECT content FROM chat_messages WHERE session_id = {p(1)} AND role = 'user' "
        f"ORDER BY {order} ASC LIMIT 1",
        f"SELECT content FROM chat_messages WHERE session_id = {p(1)} "
        f"ORDER BY {order} DESC LIMIT 1",
        f"UPDATE chat_sessions SET title = {p(1)}, last_message = {p(2)}, message_count = {p(3)}, "
        f"node_count = {p(4)}, current_leaf_id = {p(5)}, updated_at = {p(6)} "
        f"WHERE session_id = {p(7)}",
    ]


SEED_SQL_POSTGRESQL = {
    order: _seed_sql(order, lambda n: f"${n}", "::jsonb") for order in ("created_at", "ordinal")
}
SEED_SQL_SQLITE = {
    order: _seed_sql(order, lambda _: "?", "") for order in ("created_at", "ordinal")
}


async def seed_postgresql(conn: Any, order: str, session_id: str, k: int) -> None:
    insert, count, first, last, update = SEED_SQL_POSTGRESQL[order]
    role, content, metadata = _message(k)
    now = datetime.now(UTC)
    message_id = uuid.uuid4()
    async with conn.transaction():
        await conn.execute(
            insert, message_id, session_id, role, content, json.dumps(metadata), now, session_id
        )
        total = await conn.fetchval(count, session_id)
        first_user = await conn.fetchval(first, session_id)
        latest = await conn.fetchval(last, session_id)
        title = make_title(first_user) if first_user is not None else None
        await conn.execute(
            update, title, make_preview(latest), total, total, message_id, now, session_id
        )


def seed_sqlite(conn: sqlite3.Connection, order: str, session_id: str, k: int) -> None:
    insert, count, first, last, update = SEED_SQL_SQLITE[order]
    role, content, metadata = _message(k)
    now = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    message_id = uuid.uuid4().hex
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            insert,
            # The session id twice: the owner's subquery, then the ordinal's (`?` by position).
            (message_id, session_id, role, content, json.dumps(metadata), now, *[session_id] * 2),
        )
        total = conn.execute(count, (session_id,)).fetchone()[0]
        first_user = conn.execute(first, (session_id,)).fetchone()
        latest = conn.execute(last, (session_id,)).fetchone()[0]
        title = make_title(first_user[0]) if first_user is not None else None
        conn.execute(
            update, (title, make_preview(latest), total, total, message_id, now, session_id)
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


async def seed_service(db: Database, session_id: str, k: int) -> None:
    """The seed as written, through the service's stack (SQLAlchemy Core, same engine)."""
    m, s = chat_messages.c, chat_sessions.c
    role, content, metadata = _message(k)
    now = utc_now()
    next_ordinal = (
        select(func.coalesce(func.max(m.ordinal), 0) + 1).where(m.session_id == session_id)
    ).scalar_subquery()
    message_id = uuid.uuid4()
    async with db.write() as conn:
        await conn.execute(
            insert(chat_messages).values(
                id=message_id,
                session_id=session_id,
                seq=next_ordinal,
                ordinal=next_ordinal,
                role=role,
                content=content,
                metadata=metadata,
                created_at=now,
                user_id=func.coalesce(
                    select(s.user_id).where(s.session_id == session_id).scalar_subquery(), ""
                ),
            )
        )
        total = await conn.scalar(select(func.count()).where(m.session_id == session_id))
        first_user = await conn.scalar(
            select(m.content)
            .where(m.session_id == session_id, m.role == "user")
            .order_by(m.created_at)
            .limit(1)
        )
        latest = await conn.scalar(
            select(m.content)
            .where(m.session_id == session_id)
            .order_by(m.created_at.desc())
            .limit(1)
        )
        await conn.execute(
            update(chat_sessions)
            .where(s.session_id == session_id)
            .values(
                title=make_title(first_user) if first_user is not None else None,
                last_message=make_preview(latest or ""),
                message_count=total,
                node_count=total,
                current_leaf_id=message_id,
                updated_at=now,
            )
        )


async def ours_service(db: Database, session_id: str, k: int) -> None:
    role, content, metadata = _message(k)
    await save_message(db, session_id=session_id, role=role, content=content, metadata=metadata)


async def capture_templates(
    db: Database, recorder: Recorder, session_id: str
) -> tuple[WriteTemplate, WriteTemplate]:
    """What `save_message` sends for a user message and for a reply (writes both, once)."""
    templates = []
    for k in (0, 1):
        role, content, metadata = _message(k)
        with recorder.capture() as log:
            stored = await save_message(
                db, session_id=session_id, role=role, content=content, metadata=metadata
            )
        templates.append(WriteTemplate(list(log), session_id, [stored.seq]))
    return templates[0], templates[1]


@dataclass
class WriteRun:
    """Per-message latencies (seconds) of each variant."""

    latencies: dict[str, list[float]]
    sessions: list[str]
    messages_before: int  # smallest message count among the sessions, before the run


async def compare(
    database: str,
    db: Database,
    recorder: Recorder,
    raw: Any,
    sessions: list[str],
    messages: int,
    rounds: int,
) -> WriteRun:
    """Run every variant `messages` times over `sessions`, interleaved in `rounds` rounds.

    `raw` is an asyncpg connection (PostgreSQL) or a sqlite3 connection in autocommit mode.
    """
    user, reply = await capture_templates(db, recorder, sessions[0])

    async def ours_raw(session_id: str, k: int) -> None:
        template = user if k % 2 == 0 else reply
        if database == "postgresql":
            await write_postgresql(raw, template, session_id)
        else:
            write_sqlite(raw, template, session_id)

    async def seed(order: str, session_id: str, k: int) -> None:
        if database == "postgresql":
            await seed_postgresql(raw, order, session_id, k)
        else:
            seed_sqlite(raw, order, session_id, k)

    async def seed_created_at(session_id: str, k: int) -> None:
        await seed("created_at", session_id, k)

    async def seed_seq(session_id: str, k: int) -> None:
        await seed("ordinal", session_id, k)

    async def seed_stack(session_id: str, k: int) -> None:
        await seed_service(db, session_id, k)

    async def service(session_id: str, k: int) -> None:
        await ours_service(db, session_id, k)

    variants: dict[str, Callable[[str, int], Awaitable[None]]] = {
        "seed_created_at": seed_created_at,
        "seed_seq": seed_seq,
        "ours_raw": ours_raw,
        "seed_service": seed_stack,
        "ours_service": service,
    }
    before = await _smallest_count(db, sessions)
    latencies: dict[str, list[float]] = {key: [] for key in variants}
    per_round = max(2, messages // rounds // 2 * 2)  # even: as many user messages as replies
    for _ in range(rounds):
        for key, write in variants.items():
            for k in range(per_round):
                session_id = sessions[(k // 2) % len(sessions)]
                started = time.perf_counter()
                await write(session_id, k)
                latencies[key].append(time.perf_counter() - started)
    return WriteRun(latencies, sessions, before)


async def _smallest_count(db: Database, sessions: list[str]) -> int:
    async with db.read() as conn:
        value = await conn.scalar(
            select(func.min(chat_sessions.c.message_count)).where(
                chat_sessions.c.session_id.in_(sessions)
            )
        )
    return int(value or 0)
