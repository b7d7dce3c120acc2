"""The SQL the services run. Each helper takes the connection of a transaction it does not own."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    ColumnElement,
    RowMapping,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import Uuid

from app.db.tables import chat_messages, chat_sessions
from app.db.types import UTCDateTime

Role = Literal["user", "assistant", "system"]

UNTITLED = "New chat"

SUMMARY_COLUMNS = (
    chat_sessions.c.session_id,
    func.coalesce(chat_sessions.c.title, UNTITLED).label("title"),
    func.coalesce(chat_sessions.c.last_message, "").label("last_message"),
    chat_sessions.c.message_count,
    chat_sessions.c.created_at,
    chat_sessions.c.updated_at,
    chat_sessions.c.pinned,
    (~chat_sessions.c.active).label("archived"),
    chat_sessions.c.id,
)
# The sidebar's order, all descending; `id` makes it total, so pages neither overlap nor skip.
LIST_ORDER = (chat_sessions.c.pinned, chat_sessions.c.updated_at, chat_sessions.c.id)
MESSAGE_COLUMNS = (
    chat_messages.c.id,
    chat_messages.c.seq,
    chat_messages.c.role,
    chat_messages.c.content,
    chat_messages.c.metadata,
    chat_messages.c.created_at,
)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: uuid.UUID
    seq: int
    created_at: datetime


async def create_session_if_absent(
    conn: AsyncConnection, *, session_id: str, user_id: str | None, now: datetime
) -> bool:
    """Insert the session unless one with this id exists; True when this call created it."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        dialect_insert(chat_sessions)
        .values(
            id=uuid.uuid4(),
            session_id=session_id,
            user_id=user_id,
            active=True,
            metadata={},
            created_at=now,
            updated_at=now,
            message_count=0,
        )
        .on_conflict_do_nothing(index_elements=[chat_sessions.c.session_id])
    )
    result = await conn.execute(stmt)
    return bool(result.rowcount)


async def append_message(
    conn: AsyncConnection,
    *,
    session_id: str,
    role: Role,
    content: str,
    metadata: dict[str, Any],
    title: str | None,
    preview: str | None,
    now: datetime,
    owner: str | None = None,
) -> StoredMessage | None:
    """Store a message and update its session's metadata incrementally; None if no session.

    The UPDATE comes first: it locks the session row (PostgreSQL) inside a transaction that
    already holds the write lock (SQLite), so concurrent writers to one session queue here and
    each gets the next sequence number. No COUNT, no re-reading of other messages.
    `title` is kept only if the session has none yet; `preview` None leaves last_message as
    it is. With `owner`, a session of anyone else counts as missing.
    """
    now_value = literal(now, type_=UTCDateTime())
    values: dict[str, Any] = {
        "message_count": chat_sessions.c.message_count + 1,
        # Never move backwards, whatever order concurrent writers' clocks were read in.
        "updated_at": case(
            (chat_sessions.c.updated_at > now_value, chat_sessions.c.updated_at),
            else_=now_value,
        ),
    }
    if title is not None:
        values["title"] = func.coalesce(chat_sessions.c.title, title)
    if preview is not None:
        values["last_message"] = preview
    stmt = (
        update(chat_sessions)
        .where(_session_is(session_id, owner))
        .values(values)
        .returning(chat_sessions.c.message_count)
    )
    seq = (await conn.execute(stmt)).scalar_one_or_none()
    if seq is None:
        return None
    message_id = uuid.uuid4()
    await conn.execute(
        insert(chat_messages).values(
            id=message_id,
            session_id=session_id,
            seq=seq,
            role=role,
            content=content,
            metadata=metadata,
            created_at=now,
        )
    )
    return StoredMessage(id=message_id, seq=seq, created_at=now)


def _session_is(session_id: str, owner: str | None) -> ColumnElement[bool]:
    """The session with this id, if `owner` (when given) owns it."""
    condition = chat_sessions.c.session_id == session_id
    if owner is not None:
        condition = and_(condition, chat_sessions.c.user_id == owner)
    return condition


async def get_session_summary(
    conn: AsyncConnection, session_id: str, *, owner: str | None = None
) -> RowMapping | None:
    stmt = select(*SUMMARY_COLUMNS).where(_session_is(session_id, owner))
    return (await conn.execute(stmt)).mappings().one_or_none()


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where a page of the sidebar ends: the sort key of its last session."""

    pinned: bool
    updated_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class SessionFilter:
    user_id: str | None
    archived: bool

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses = [chat_sessions.c.active == (not self.archived)]
        if self.user_id is not None:
            clauses.append(chat_sessions.c.user_id == self.user_id)
        return clauses


async def list_session_summaries(
    conn: AsyncConnection,
    *,
    where: SessionFilter,
    limit: int,
    offset: int = 0,
    after: ListPosition | None = None,
) -> list[RowMapping]:
    """Pinned first, then newest activity first; from `offset`, or strictly after `after`
    (keyset: an index range scan at any depth)."""
    stmt = (
        select(*SUMMARY_COLUMNS)
        .where(*where.clauses())
        .order_by(*(column.desc() for column in LIST_ORDER))
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(
            tuple_(*LIST_ORDER)
            < tuple_(
                literal(after.pinned, type_=Boolean()),
                literal(after.updated_at, type_=UTCDateTime()),
                literal(after.id, type_=Uuid()),
            )
        )
    elif offset:
        stmt = stmt.offset(offset)
    return list((await conn.execute(stmt)).mappings())


async def count_sessions(conn: AsyncConnection, *, where: SessionFilter) -> int:
    stmt = select(func.count()).select_from(chat_sessions).where(*where.clauses())
    return int((await conn.execute(stmt)).scalar_one())


async def update_session(
    conn: AsyncConnection,
    session_id: str,
    *,
    owner: str | None,
    title: str | None,
    pinned: bool | None,
    archived: bool | None,
) -> bool:
    """Rename, pin or archive; True when the session exists (and is the owner's).

    Activity time is left alone: organising a session is not talking in it.
    """
    values: dict[str, Any] = {}
    if title is not None:
        # Never null again, so the automatic title (set only while null) cannot replace it.
        values["title"] = title
    if pinned is not None:
        values["pinned"] = pinned
    if archived is not None:
        values["active"] = not archived
    stmt = update(chat_sessions).where(_session_is(session_id, owner)).values(values)
    return bool((await conn.execute(stmt)).rowcount)


async def delete_sessions_of(conn: AsyncConnection, user_id: str) -> int:
    """Delete every session of `user_id` (messages go by cascade); how many there were."""
    stmt = delete(chat_sessions).where(chat_sessions.c.user_id == user_id)
    return int((await conn.execute(stmt)).rowcount)


async def list_messages(
    conn: AsyncConnection, session_id: str, *, before: int | None = None, limit: int | None = None
) -> list[RowMapping]:
    """A session's messages, oldest first: all of them, or the newest `limit` before the
    sequence number `before`."""
    stmt = select(*MESSAGE_COLUMNS).where(chat_messages.c.session_id == session_id)
    if before is not None:
        stmt = stmt.where(chat_messages.c.seq < before)
    if limit is None:
        return list((await conn.execute(stmt.order_by(chat_messages.c.seq))).mappings())
    newest_first = stmt.order_by(chat_messages.c.seq.desc()).limit(limit)
    rows = list((await conn.execute(newest_first)).mappings())
    rows.reverse()
    return rows


async def list_recent_messages(
    conn: AsyncConnection, *, session_id: str, up_to_seq: int, limit: int
) -> list[RowMapping]:
    """The last `limit` messages up to and including `up_to_seq`, oldest first."""
    stmt = (
        select(*MESSAGE_COLUMNS)
        .where(chat_messages.c.session_id == session_id, chat_messages.c.seq <= up_to_seq)
        .order_by(chat_messages.c.seq.desc())
        .limit(limit)
    )
    rows = list((await conn.execute(stmt)).mappings())
    rows.reverse()
    return rows


async def delete_session(
    conn: AsyncConnection, session_id: str, *, owner: str | None = None
) -> bool:
    """Delete the session (its messages go by cascade); True when it existed."""
    stmt = delete(chat_sessions).where(_session_is(session_id, owner))
    return bool((await conn.execute(stmt)).rowcount)
