"""Feedback use cases: rating a reply, clearing the rating, and the export of everyone's
ratings for service callers. Each is one transaction."""

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.access import Caller
from app.feedback import queries
from app.feedback.cursor import encode_cursor
from app.feedback.queries import FeedbackPosition, RatedMessage
from app.feedback.schemas import FeedbackList, FeedbackRequest, MessageFeedback
from app.kit.db.engine import Database
from app.kit.db.types import utc_now
from app.kit.errors import (
    MessageNotFound,
    NotARatedMessage,
    ReplyNotFinished,
    SessionNotFound,
)
from app.replies.metadata import GENERATING
from app.sessions import queries as session_queries


async def _rated(
    conn: AsyncConnection, caller: Caller, session_id: str, message_id: uuid.UUID
) -> RatedMessage:
    """The reply to rate. A session that is not the caller's is missing (404, as one that
    does not exist); a message of the session that is not a finished reply is refused."""
    message = await queries.find_message(
        conn, session_id=session_id, message_id=message_id, owner=caller.owner_filter
    )
    if message is None:
        summary = await session_queries.get_session_summary(
            conn, session_id, owner=caller.owner_filter
        )
        raise SessionNotFound() if summary is None else MessageNotFound()
    if message.role != "assistant":
        raise NotARatedMessage()
    if message.status == GENERATING:
        raise ReplyNotFinished()
    return message


async def set_feedback(
    db: Database,
    caller: Caller,
    session_id: str,
    message_id: uuid.UUID,
    feedback: FeedbackRequest,
) -> MessageFeedback:
    """Rate a reply, replacing the rating it had; the rating as stored."""
    async with db.write() as conn:
        message = await _rated(conn, caller, session_id, message_id)
        stored = await queries.put_feedback(
            conn,
            message_id=message_id,
            session_id=session_id,
            user_id=message.owner,
            rating=feedback.rating,
            comment=feedback.comment,
            now=utc_now(),
        )
    return MessageFeedback.model_validate(stored)


async def clear_feedback(
    db: Database, caller: Caller, session_id: str, message_id: uuid.UUID
) -> None:
    """Clear a reply's rating; a reply without one is left as it is (no error)."""
    async with db.write() as conn:
        await _rated(conn, caller, session_id, message_id)
        await queries.delete_feedback(conn, message_id)


async def list_feedback(
    db: Database,
    caller: Caller,
    *,
    since: datetime | None,
    after: FeedbackPosition | None,
    limit: int,
) -> FeedbackList:
    """A page of everyone's feedback, least recently stored first, with the reply rated, its
    model and the message it answered; for callers that may read every user's sessions."""
    caller.require_everyone("list feedback")
    # On the read replica if any: an export a moment behind is as good (docs/scaling.md).
    async with db.replica_read() as conn:
        rows = await queries.list_feedback(conn, since=since, after=after, limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for row in rows:
        metadata = row["reply_metadata"] if isinstance(row["reply_metadata"], dict) else {}
        items.append(
            {
                **row,
                "message": {
                    "id": row["message_id"],
                    "content": row["reply_content"],
                    "provider": _text(metadata.get("provider")),
                    "model": _text(metadata.get("model")),
                },
                "answered": (
                    None
                    if row["answered_id"] is None
                    else {"id": row["answered_id"], "content": row["answered_content"]}
                ),
            }
        )
    last = rows[-1] if rows else None
    return FeedbackList.model_validate(
        {
            "feedback": items,
            "next_cursor": (
                encode_cursor(FeedbackPosition(last["stored_at"], last["message_id"]))
                if has_more and last is not None
                else None
            ),
            "has_more": has_more,
        }
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
