"""The SQL of a session's messages: appending one (and its session's metadata), and reading
them. Each helper takes the connection of a transaction it does not own."""

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    RowMapping,
    Text,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from app.domain import Role
from app.kit.db.rows import as_dicts
from app.kit.db.tables import SEARCH_TITLE_SEQ, chat_messages, chat_sessions
from app.kit.db.types import UTCDateTime
from app.search import index as search_index
from app.sessions.queries import session_is

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

    The message's time is `now` or the session's `updated_at`, whichever is later, decided
    under the row lock: `now` was read before the lock, and a writer that read its clock
    first may get the lock last. So `created_at` never goes backwards along `seq`, and the
    session's `updated_at` is its newest message's `created_at`.
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
        .where(session_is(session_id, owner))
        .values(values)
        .returning(
            chat_sessions.c.message_count,
            chat_sessions.c.user_id,
            chat_sessions.c.title,
            chat_sessions.c.updated_at,
        )
    )
    session = (await conn.execute(stmt)).one_or_none()
    if session is None:
        return None
    seq = session.message_count
    created_at: datetime = session.updated_at
    message_id = uuid.uuid4()
    await conn.execute(
        insert(chat_messages).values(
            id=message_id,
            session_id=session_id,
            seq=seq,
            role=role,
            content=content,
            metadata=metadata,
            created_at=created_at,
        )
    )
    # This message set the automatic title, unless the title already read the same (then
    # its entry exists, and the insert is a no-op).
    if title is not None and session.title == title:
        await search_index.index_text(
            conn, session_id, session.user_id, SEARCH_TITLE_SEQ, title, if_absent=True
        )
    await search_index.index_text(conn, session_id, session.user_id, seq, content)
    return StoredMessage(id=message_id, seq=seq, created_at=created_at)


_SESSION_ID = bindparam("session_id", type_=Text())
_MESSAGES_BEFORE = bindparam("messages_before", type_=Integer())
_MESSAGES_LIMIT = bindparam("messages_limit", type_=Integer())


@functools.cache
def _messages(*, before: bool, newest: bool) -> Select[Any]:
    stmt = select(*MESSAGE_COLUMNS).where(chat_messages.c.session_id == _SESSION_ID)
    if before:
        stmt = stmt.where(chat_messages.c.seq < _MESSAGES_BEFORE)
    if newest:
        return stmt.order_by(chat_messages.c.seq.desc()).limit(_MESSAGES_LIMIT)
    return stmt.order_by(chat_messages.c.seq)


async def list_messages(
    conn: AsyncConnection, session_id: str, *, before: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """A session's messages, oldest first: all of them, or the newest `limit` before the
    sequence number `before`."""
    stmt = _messages(before=before is not None, newest=limit is not None)
    parameters = {"session_id": session_id, "messages_before": before, "messages_limit": limit}
    rows = as_dicts(await conn.execute(stmt, parameters))
    if limit is not None:
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
