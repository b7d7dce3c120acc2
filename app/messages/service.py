"""Sending a message: the user's message stored (the session created on its first), the
conversation the assistant answers, and a plain reply awaited.

Each user-visible write is one transaction: a message and the session metadata it changes
are committed together, with the start of its reply (stored as generating). The assistant is
never called while a transaction is open.
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
from app.idempotency import keys as idempotency
from app.idempotency.keys import IdempotencyKey
from app.idempotency.queries import KeyedRequest
from app.kit.db.engine import Database
from app.kit.db.types import utc_now
from app.kit.errors import (
    MessageNotFound,
    NotAnAssistantMessage,
    NotAUserMessage,
    ReplyInProgress,
    ReplyLost,
    SessionNotFound,
)
from app.kit.text import make_preview, make_title
from app.messages import queries
from app.messages.queries import MessageRef, StoredMessage
from app.messages.schemas import ChatRequest, ChatResponse
from app.replies import queries as reply_queries
from app.replies.generation import Failed, ReplyStart, ReplyTasks, start_generating
from app.replies.metadata import FAILED, GENERATING, plain_reply_error
from app.sessions import queries as session_queries
from app.titles.service import TitleTasks

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """A message to answer (the user's, just stored; or the question of a reply to
    regenerate), with the conversation the assistant should answer."""

    session_id: str
    message: StoredMessage
    history: list[Turn]
    # The reply, stored as generating in the same transaction (None: none was asked for).
    reply: StoredMessage | None = None


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
    db: Database,
    caller: Caller,
    request: ChatRequest,
    *,
    history_max_messages: int,
    reply_start: ReplyStart | None = None,
) -> AcceptedMessage:
    """Create the session if needed and store the user's message, and with `reply_start` the
    start of its reply, in one transaction; the history is read in it too, so nothing can fail
    between a reply's start and its generation.

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
        started = (
            None
            if reply_start is None
            else await reply_start.store(conn, session_id=session_id, question_id=stored.id)
        )
        history = await _history(conn, stored.id, stored.seq, history_max_messages)
    return AcceptedMessage(session_id=session_id, message=stored, history=history, reply=started)


async def accept_regeneration(
    db: Database,
    caller: Caller,
    session_id: str,
    reply_id: uuid.UUID,
    *,
    history_max_messages: int,
    reply_start: ReplyStart | None = None,
) -> AcceptedMessage:
    """The question that the assistant reply `reply_id` answers, with its conversation, for a
    new reply beside the old one, and with `reply_start` that new reply's start, made current (the
    only write). A message that is not the caller's is a 404, one the assistant did not
    write a 422."""
    async with db.read() if reply_start is None else db.write() as conn:
        reply = await message_of(conn, caller, session_id, reply_id)
        if reply.role != "assistant":
            raise NotAnAssistantMessage()
        question = (
            None
            if reply.parent_id is None
            else await queries.find_message(
                conn, session_id=session_id, message_id=reply.parent_id, owner=None
            )
        )
        if question is None:
            raise NotAnAssistantMessage("This reply answers no message: nothing to regenerate")
        history = await _history(conn, question.id, question.seq, history_max_messages)
        started = (
            None
            if reply_start is None
            else await reply_start.store(
                conn, session_id=session_id, question_id=question.id, make_current=True
            )
        )
        if reply_start is not None and started is None:
            raise SessionNotFound()  # deleted meanwhile
    return AcceptedMessage(
        session_id=session_id,
        message=StoredMessage(
            id=question.id,
            seq=question.seq,
            created_at=question.created_at,
            parent_id=question.parent_id,
        ),
        history=history,
        reply=started,
    )


async def _history(
    conn: AsyncConnection, message_id: uuid.UUID, seq: int, limit: int
) -> list[Turn]:
    """What the assistant sees when it answers the message: its branch only, up to it.
    Replies that failed, or are still being generated (for an earlier message of this
    session, sent concurrently), are not part of the conversation."""
    rows = await queries.list_ancestors(conn, message_id=message_id, seq=seq, limit=limit)
    return [
        Turn(role=row["role"], content=row["content"])
        for row in rows
        if row["metadata"].get("status") not in (FAILED, GENERATING)
    ]


async def message_of(
    conn: AsyncConnection, caller: Caller, session_id: str, message_id: uuid.UUID
) -> MessageRef:
    """A message of one of the caller's sessions; SessionNotFound if the session is not the
    caller's (or does not exist), MessageNotFound if the message is not in it."""
    message = await queries.find_message(
        conn, session_id=session_id, message_id=message_id, owner=caller.owner_filter
    )
    if message is not None:
        return message
    summary = await session_queries.get_session_summary(conn, session_id, owner=caller.owner_filter)
    raise SessionNotFound() if summary is None else MessageNotFound()


async def _beside(
    conn: AsyncConnection, caller: Caller, session_id: str, edited_id: uuid.UUID
) -> dict[str, Any]:
    """Where an edit of `edited_id` goes: beside it (same parent), made current. Nothing is
    written for a session or message that is not the caller's, or a message of another role."""
    edited = await message_of(conn, caller, session_id, edited_id)
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
    titles: TitleTasks | None = None,
    key: IdempotencyKey | None = None,
) -> ChatResponse:
    """Save the user's message, ask the assistant with the session's history, save the reply.
    The session's title is asked for beside the reply when this message starts the session;
    the answer does not wait for it. Sent again under its `key`: `answer_again`."""
    accepted = await idempotency.once(
        key,
        db,
        lambda: accept_user_message(
            db,
            caller,
            request,
            history_max_messages=history_max_messages,
            reply_start=ReplyStart.of(assistant, tasks, key),
        ),
    )
    if isinstance(accepted, KeyedRequest):
        return await answer_again(db, accepted)
    if titles is not None:
        titles.begin(
            db, accepted.session_id, ordinal=accepted.message.ordinal, question=request.message
        )
    return await answer(db, assistant, tasks, accepted)


async def answer(
    db: Database, assistant: Assistant, tasks: ReplyTasks, accepted: AcceptedMessage
) -> ChatResponse:
    """The reply to an accepted message (accepted with its `ReplyStart`), awaited whole.

    The reply is generated by a task of `tasks`, as a streamed one is: if this request goes
    away it is still saved, and at shutdown it is stopped and saved as failed (503).
    """
    if accepted.reply is None:
        raise ValueError("the message was accepted without its reply's start")
    _, reply = start_generating(
        db,
        assistant,
        tasks,
        session_id=accepted.session_id,
        question=accepted.message,
        reply=accepted.reply,
        history=accepted.history,
        streamed=False,
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


async def answer_again(db: Database, earlier: KeyedRequest) -> ChatResponse:
    """The answer to a plain request sent again under its Idempotency-Key: what the first
    sending answered once its reply has ended (the stored reply, or the same error), or
    ReplyInProgress (409) while the reply is generated."""
    async with db.read() as conn:
        reply = await reply_queries.find_reply(conn, earlier.session_id, earlier.reply_id)
    if reply is None:  # the key goes with its session; deleted since it was read
        raise ReplyLost()
    if reply.process_id is not None:
        raise ReplyInProgress(earlier.session_id)
    if reply.status != "complete":
        raise plain_reply_error(reply.error)
    return ChatResponse(
        session_id=earlier.session_id,
        response=reply.content,
        message_id=reply.message_id,
        user_message_id=earlier.question_id,
    )
