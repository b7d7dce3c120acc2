"""Sending a message: the user's message stored (the session created on its first), the
conversation the assistant answers, and a plain reply awaited.

Each user-visible write is one transaction: a message and the session metadata it changes
are committed together. The assistant is never called while a transaction is open.
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.assistants import Assistant, Turn
from app.auth.access import Caller
from app.domain import Role
from app.kit.db.engine import Database
from app.kit.db.types import utc_now
from app.kit.errors import MessageNotFound, NotAUserMessage, SessionNotFound
from app.kit.text import make_preview, make_title
from app.messages import queries
from app.messages.queries import StoredMessage
from app.messages.schemas import ChatRequest, ChatResponse
from app.replies.generation import Failed, ReplyTasks, generate_reply
from app.replies.metadata import FAILED, GENERATING
from app.sessions import queries as session_queries

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """A user message that is stored, with the conversation the assistant should answer."""

    session_id: str
    message: StoredMessage
    history: list[Turn]


async def save_message(
    db: Database, *, session_id: str, role: Role, content: str, metadata: dict[str, Any]
) -> StoredMessage:
    """Store one message and its session's metadata in one transaction.

    A message without text (a reply that failed) counts, but leaves the preview as it was.
    """
    async with db.write() as conn:
        stored = await queries.append_message(
            conn,
            session_id=session_id,
            role=role,
            content=content,
            metadata=metadata,
            title=make_title(content) if role == "user" else None,
            preview=make_preview(content) if content.strip() else None,
            now=utc_now(),
        )
    if stored is None:
        raise SessionNotFound()
    return stored


async def accept_user_message(
    db: Database, caller: Caller, request: ChatRequest, *, history_max_messages: int
) -> AcceptedMessage:
    """Create the session if needed and store the user's message, in one transaction.

    A session that exists but is not the caller's is reported as missing (404), and nothing
    is written; an id nobody has is created. So sending is the one request that tells a taken
    id (404) from a free one (200, created): clients should choose random ids.
    """
    owner = caller.acting_for(request.user_id)
    session_id = request.session_id or str(uuid.uuid4())
    now = utc_now()
    async with db.write() as conn:
        if request.edit_of is None:
            await session_queries.create_session_if_absent(
                conn, session_id=session_id, user_id=owner, now=now
            )
            placement: dict[str, Any] = {}
        else:
            placement = await _beside(conn, caller, session_id, request.edit_of)
        stored = await queries.append_message(
            conn,
            session_id=session_id,
            role="user",
            content=request.message,
            metadata={},
            title=make_title(request.message),
            preview=make_preview(request.message),
            now=now,
            owner=caller.owner_filter,
            **placement,
        )
        if stored is None:
            raise SessionNotFound()
        if request.edit_of is not None:
            await queries.remember_branch(conn, session_id=session_id, leaf_id=stored.id)
    async with db.read() as conn:
        rows = await queries.list_ancestors(conn, message=stored, limit=history_max_messages)
    # The message's branch only. Replies that failed, or are still being generated (for an
    # earlier message of this session, sent concurrently), are not part of the conversation.
    history = [
        Turn(role=row["role"], content=row["content"])
        for row in rows
        if row["metadata"].get("status") not in (FAILED, GENERATING)
    ]
    return AcceptedMessage(session_id=session_id, message=stored, history=history)


async def _beside(
    conn: AsyncConnection, caller: Caller, session_id: str, edited_id: uuid.UUID
) -> dict[str, Any]:
    """Where an edit of `edited_id` goes: beside it (same parent), made current. Nothing is
    written for a session or message that is not the caller's, or a message of another role."""
    edited = await queries.find_message(
        conn, session_id=session_id, message_id=edited_id, owner=caller.owner_filter
    )
    if edited is None:
        summary = await session_queries.get_session_summary(
            conn, session_id, owner=caller.owner_filter
        )
        raise SessionNotFound() if summary is None else MessageNotFound()
    if edited.role != "user":
        raise NotAUserMessage()
    if edited.parent_id is None:
        return {"first": True, "make_current": True}
    return {"parent_id": edited.parent_id, "make_current": True}


async def process_chat(
    db: Database,
    assistant: Assistant,
    caller: Caller,
    request: ChatRequest,
    *,
    history_max_messages: int,
    tasks: ReplyTasks,
) -> ChatResponse:
    """Save the user's message, ask the assistant with the session's history, save the reply.

    The reply is generated by a task of `tasks`, as a streamed one is: if this request goes
    away it is still saved, and at shutdown it is stopped and saved as failed (503).
    """
    accepted = await accept_user_message(
        db, caller, request, history_max_messages=history_max_messages
    )
    reply = tasks.start(
        generate_reply(
            db,
            assistant,
            tasks,
            session_id=accepted.session_id,
            question=accepted.message,
            history=accepted.history,
        )
    )
    # Shielded: a cancelled request (a server giving up on it) leaves the reply to finish.
    outcome = await asyncio.shield(reply)
    if isinstance(outcome, Failed):
        raise outcome.error
    return ChatResponse(
        session_id=accepted.session_id,
        response=outcome.content,
        message_id=outcome.message_id,
        user_message_id=accepted.message.id,
    )
