"""The SQL of feedback: the message rated, setting and clearing a rating, the ratings of a page
of messages, and the export's pages. Each helper takes the connection of a transaction it does
not own."""

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Text, Uuid, bindparam, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from app.domain import Rating
from app.kit.db.rows import as_dicts
from app.kit.db.tables import chat_feedback, chat_messages, chat_sessions
from app.kit.db.types import UTCDateTime
from app.sessions.queries import owned, session_is

FEEDBACK_COLUMNS = (chat_feedback.c.rating, chat_feedback.c.comment, chat_feedback.c.updated_at)


@dataclass(frozen=True, slots=True)
class RatedMessage:
    """A message someone wants to rate, and the session's owner."""

    role: str
    status: str | None
    owner: str | None


async def find_message(
    conn: AsyncConnection, *, session_id: str, message_id: uuid.UUID, owner: str | None
) -> RatedMessage | None:
    """The message of the session (of `owner`, when given); None if there is no such message.

    On PostgreSQL the session row is key-share locked until the transaction ends, as the
    rating's foreign keys would lock it: deleting the session meanwhile waits, then takes the
    rating with it, and a session deleted first is not found. The session's row, not the
    message's: a delete locks the session first and its messages after, and taking them in
    the other order deadlocked. Appends (which update the session) are not blocked. SQLite's
    write transaction holds the database lock.
    """
    row = (
        await conn.execute(
            select(chat_messages.c.role, chat_messages.c.metadata, chat_sessions.c.user_id)
            .join(chat_sessions, chat_sessions.c.session_id == chat_messages.c.session_id)
            .where(
                chat_messages.c.id == message_id,
                *owned(chat_messages, owner),
                session_is(session_id, owner),
            )
            .with_for_update(read=True, key_share=True, of=chat_sessions)
        )
    ).one_or_none()
    if row is None:
        return None
    status = row.metadata.get("status") if isinstance(row.metadata, dict) else None
    return RatedMessage(role=row.role, status=status, owner=row.user_id)


async def put_feedback(
    conn: AsyncConnection,
    *,
    message_id: uuid.UUID,
    session_id: str,
    user_id: str | None,
    rating: Rating,
    comment: str | None,
    now: datetime,
    given_at: datetime | None = None,
) -> dict[str, Any]:
    """Set the message's feedback, replacing any it had (its `created_at` stays), as given at
    `given_at` (an imported rating's time; default `now`) and stored `now`; one statement,
    so concurrent ratings of one message end as the last one, never as an error."""
    given = now if given_at is None else given_at
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(chat_feedback).values(
        message_id=message_id,
        session_id=session_id,
        user_id=user_id,
        rating=rating,
        comment=comment,
        created_at=given,
        updated_at=given,
        stored_at=now,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[chat_feedback.c.message_id],
        set_={
            "rating": stmt.excluded.rating,
            "comment": stmt.excluded.comment,
            "updated_at": stmt.excluded.updated_at,
            "stored_at": stmt.excluded.stored_at,
        },
    ).returning(*FEEDBACK_COLUMNS)
    return dict((await conn.execute(upsert)).one()._mapping)


async def delete_feedback(conn: AsyncConnection, message_id: uuid.UUID) -> bool:
    """Clear the message's feedback; True if it had some."""
    result = await conn.execute(
        delete(chat_feedback).where(chat_feedback.c.message_id == message_id)
    )
    return bool(result.rowcount)


_SESSION_ID = bindparam("session_id", type_=Text())
_MESSAGE_IDS = bindparam("message_ids", expanding=True, type_=Uuid())
# Up to this many messages, their ratings are looked up by key; a longer list (a whole tree or
# branch) reads the session's ratings instead, which stays within every driver's limit on
# bound parameters (SQLite's is 32,766) and is one range of idx_chat_feedback_session.
_BY_KEY_MAX = 500


@functools.cache
def _feedback_of(*, by_key: bool) -> Select[Any]:
    stmt = select(chat_feedback.c.message_id, *FEEDBACK_COLUMNS).where(
        chat_feedback.c.session_id == _SESSION_ID
    )
    return stmt.where(chat_feedback.c.message_id.in_(_MESSAGE_IDS)) if by_key else stmt


async def add_feedback(
    conn: AsyncConnection, session_id: str, messages: list[dict[str, Any]]
) -> None:
    """Set each message's `feedback` (a dict of FEEDBACK_COLUMNS, or None): one query for the
    messages of a page or of a whole session."""
    found: dict[uuid.UUID, dict[str, Any]] = {}
    if messages:
        by_key = len(messages) <= _BY_KEY_MAX
        parameters: dict[str, Any] = {"session_id": session_id}
        if by_key:
            parameters["message_ids"] = [m["id"] for m in messages]
        rows = await conn.execute(_feedback_of(by_key=by_key), parameters)
        found = {row.message_id: dict(row._mapping) for row in rows}
    for message in messages:
        feedback = found.get(message["id"])
        if feedback is not None:
            del feedback["message_id"]
        message["feedback"] = feedback


@dataclass(frozen=True, slots=True)
class FeedbackPosition:
    """Where a page of the export ends: the sort key of its last entry."""

    stored_at: datetime
    message_id: uuid.UUID


_SINCE = bindparam("since", type_=UTCDateTime())
_AFTER_STORED_AT = bindparam("after_stored_at", type_=UTCDateTime())
_AFTER_ID = bindparam("after_id", type_=Uuid())
_LIMIT = bindparam("limit", type_=Integer())


@functools.cache
def _export_page(*, since: bool, after: bool) -> Select[Any]:
    """Feedback in (stored_at, message_id) order, with the reply and the message it answered:
    one range of idx_chat_feedback_stored, two lookups by primary key per entry."""
    reply = chat_messages.alias("reply")
    answered = chat_messages.alias("answered")
    stmt = (
        select(
            chat_feedback.c.session_id,
            chat_feedback.c.user_id,
            chat_feedback.c.rating,
            chat_feedback.c.comment,
            chat_feedback.c.created_at,
            chat_feedback.c.updated_at,
            chat_feedback.c.stored_at,
            chat_feedback.c.message_id,
            reply.c.content.label("reply_content"),
            reply.c.metadata.label("reply_metadata"),
            answered.c.id.label("answered_id"),
            answered.c.content.label("answered_content"),
        )
        .join(reply, reply.c.id == chat_feedback.c.message_id)
        .outerjoin(answered, answered.c.id == reply.c.parent_id)
        .order_by(chat_feedback.c.stored_at, chat_feedback.c.message_id)
        .limit(_LIMIT)
    )
    if since:
        stmt = stmt.where(chat_feedback.c.stored_at >= _SINCE)
    if after:
        stmt = stmt.where(
            tuple_(chat_feedback.c.stored_at, chat_feedback.c.message_id)
            > tuple_(_AFTER_STORED_AT, _AFTER_ID)
        )
    return stmt


async def list_feedback(
    conn: AsyncConnection,
    *,
    since: datetime | None,
    after: FeedbackPosition | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to `limit` entries of everyone's feedback stored at or after `since`, strictly
    after `after`, in (stored_at, message_id) order."""
    parameters: dict[str, Any] = {"limit": limit}
    if since is not None:
        parameters["since"] = since
    if after is not None:
        parameters |= {"after_stored_at": after.stored_at, "after_id": after.message_id}
    stmt = _export_page(since=since is not None, after=after is not None)
    return as_dicts(await conn.execute(stmt, parameters))
