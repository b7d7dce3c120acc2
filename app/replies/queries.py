"""The SQL of the reply lifecycle (migration 0006): a reply stored when its generation starts,
saved as it grows, and finished in one transaction; the processes that generate replies and
their heartbeats. Each helper takes the connection of a transaction it does not own."""

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.db.engine import DriverConnection
from app.kit.db.tables import chat_messages, chat_processes, chat_replies_generating, chat_sessions
from app.messages import queries as message_queries
from app.messages.queries import StoredMessage
from app.search import index as search_index


async def start_reply(
    conn: AsyncConnection,
    *,
    session_id: str,
    question_id: uuid.UUID,
    process_id: uuid.UUID,
    metadata: dict[str, Any],
    now: datetime,
    make_current: bool = False,
) -> StoredMessage | None:
    """Store an empty assistant message that `process_id` is generating; None if no session.

    With `make_current` (a regeneration) it becomes a new child of the question, made the
    current branch's end and remembered at every fork above it.

    It is stored now, so it counts in the session's metadata at once, as the child of the
    message it answers (`question_id`), which normally ends the current branch. If messages
    were added after the question meanwhile (several sent at once), it goes after them, at
    the end of the same branch, as replies did before the tree: a sibling of another role
    would be no version of that message. If the question left the current branch meanwhile
    (another branch was made current), the reply stays its child, beside the current branch.
    Its preview, and the session's last_message, stay what they were until it ends.
    """
    stored = await message_queries.append_message(
        conn,
        session_id=session_id,
        role="assistant",
        content="",
        metadata=metadata,
        title=None,
        preview=None,
        now=now,
        parent_id=question_id,
        make_current=make_current,
    )
    if stored is None:
        return None
    if make_current:
        await message_queries.remember_branch(conn, session_id=session_id, leaf_id=stored.id)
    elif not stored.ends_branch:
        stored = await message_queries.move_to_branch_end(
            conn, session_id=session_id, message=stored, after_seq=stored.seq - 1
        )
    await conn.execute(
        insert(chat_replies_generating).values(
            message_id=stored.id,
            process_id=process_id,
            started_at=stored.created_at,
            user_id=stored.owner,
        )
    )
    return stored


def _generated_by(message_id: uuid.UUID, process_id: uuid.UUID) -> Any:
    return (
        select(chat_replies_generating.c.message_id)
        .where(
            chat_replies_generating.c.message_id == message_id,
            chat_replies_generating.c.process_id == process_id,
        )
        .exists()
    )


class DraftSaved(enum.Enum):
    SAVED = "saved"
    # Saved, and a stop was asked through another process (`request_stop`).
    STOP_REQUESTED = "stop requested"
    # Not this process's any more: finished as interrupted meanwhile, or deleted.
    GONE = "gone"


def _draft_save(*, unless_stop_requested: bool) -> Any:
    generating = chat_replies_generating.c
    conditions = [
        generating.message_id == bindparam("draft_id"),
        generating.process_id == bindparam("draft_process_id"),
    ]
    if unless_stop_requested:
        conditions.append(generating.stop_requested_at.is_(None))
    return (
        update(chat_messages)
        .where(chat_messages.c.id == bindparam("draft_id"))
        .where(select(generating.message_id).where(*conditions).exists())
        .values(content=bindparam("draft_content"))
    )


# Built once: every reply being generated is saved twice a second (REPLY_SAVE_INTERVAL_MS).
_SAVE_DRAFT = _draft_save(unless_stop_requested=True)
_SAVE_DRAFT_STOPPING = _draft_save(unless_stop_requested=False)


async def save_draft(
    conn: DriverConnection, *, message_id: uuid.UUID, process_id: uuid.UUID, content: str
) -> DraftSaved:
    """Save what was generated so far. One statement, unless the reply is not (or no longer)
    the process's to save, or a stop was asked for it: a second one tells which. Each
    statement saves the text or nothing, so it needs no transaction around it."""
    values = {"draft_id": message_id, "draft_process_id": process_id, "draft_content": content}
    if await conn.execute(_SAVE_DRAFT, values):
        return DraftSaved.SAVED
    if await conn.execute(_SAVE_DRAFT_STOPPING, values):
        return DraftSaved.STOP_REQUESTED
    return DraftSaved.GONE


async def request_stop(
    conn: AsyncConnection, message_ids: list[uuid.UUID], *, now: datetime
) -> list[uuid.UUID]:
    """Mark replies to be stopped by the process that generates them; those still generating."""
    if not message_ids:
        return []
    generating = chat_replies_generating.c
    stmt = (
        update(chat_replies_generating)
        .where(generating.message_id.in_(message_ids))
        .values(stop_requested_at=func.coalesce(generating.stop_requested_at, now))
        .returning(generating.message_id)
    )
    return [row.message_id for row in await conn.execute(stmt)]


async def still_generating(conn: AsyncConnection, message_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    generating = chat_replies_generating.c
    stmt = select(generating.message_id).where(generating.message_id.in_(message_ids))
    return [row.message_id for row in await conn.execute(stmt)]


async def stops_requested(conn: AsyncConnection, process_id: uuid.UUID) -> list[str]:
    """Sessions of the replies that `process_id` generates and was asked to stop."""
    generating = chat_replies_generating.c
    stmt = (
        select(chat_messages.c.session_id)
        .join(chat_messages, chat_messages.c.id == generating.message_id)
        .where(generating.process_id == process_id, generating.stop_requested_at.is_not(None))
        .distinct()
    )
    return [row.session_id for row in await conn.execute(stmt)]


@dataclass(frozen=True, slots=True)
class FinishedReply:
    session_id: str
    seq: int
    ordinal: int


async def finish_reply(
    conn: AsyncConnection,
    *,
    message_id: uuid.UUID,
    process_id: uuid.UUID | None,
    content: str,
    metadata: dict[str, Any],
    preview: str | None,
) -> FinishedReply | None:
    """Finish a reply that is generating: its text and metadata, the session's preview, and
    its search index entry. None when it is not generating (any more) for `process_id` (any
    process when None): another process finished it, or it was deleted.

    Taking the reply out of chat_replies_generating comes first: of two processes finishing
    the same reply (a sweep and a late owner), exactly one gets the row and writes.
    `preview` None leaves the previews as they are; otherwise it becomes the reply's
    branch_preview, and the session's last_message if the reply still ends the current
    branch. (A message without text stored below it meanwhile keeps the preview it took.)
    """
    claim = delete(chat_replies_generating).where(
        chat_replies_generating.c.message_id == message_id
    )
    if process_id is not None:
        claim = claim.where(chat_replies_generating.c.process_id == process_id)
    if not (await conn.execute(claim)).rowcount:
        return None
    message = (
        await conn.execute(
            update(chat_messages)
            .where(chat_messages.c.id == message_id)
            .values(
                content=content,
                metadata=metadata,
                **({} if preview is None else {"branch_preview": preview}),
            )
            .returning(chat_messages.c.session_id, chat_messages.c.seq, chat_messages.c.ordinal)
        )
    ).one_or_none()
    if message is None:
        return None
    session = update(chat_sessions).where(chat_sessions.c.session_id == message.session_id)
    if preview is not None:
        session = session.values(last_message=preview).where(
            chat_sessions.c.current_leaf_id == message_id
        )
        owner = (await conn.execute(session.returning(chat_sessions.c.user_id))).one_or_none()
    else:
        owner = None
    if owner is None:
        owner = (
            await conn.execute(
                select(chat_sessions.c.user_id).where(
                    chat_sessions.c.session_id == message.session_id
                )
            )
        ).one()
    await search_index.index_message(
        conn, message.session_id, owner.user_id, message.ordinal, content
    )
    return FinishedReply(session_id=message.session_id, seq=message.seq, ordinal=message.ordinal)


async def report_alive(
    conn: AsyncConnection,
    *,
    process_id: uuid.UUID,
    host: str,
    pid: int,
    started_at: datetime,
    now: datetime,
) -> None:
    """Record that the process is running, now (its row is created again if a sweep removed
    it while the process was stalled)."""
    stmt = update(chat_processes).where(chat_processes.c.id == process_id).values(heartbeat_at=now)
    if not (await conn.execute(stmt)).rowcount:
        await conn.execute(
            insert(chat_processes).values(
                id=process_id, host=host, pid=pid, started_at=started_at, heartbeat_at=now
            )
        )


async def forget_process(conn: AsyncConnection, process_id: uuid.UUID) -> None:
    await conn.execute(delete(chat_processes).where(chat_processes.c.id == process_id))


async def processes_on_host(conn: AsyncConnection, host: str) -> list[tuple[uuid.UUID, int]]:
    """(id, pid) of the processes registered from `host`."""
    rows = await conn.execute(
        select(chat_processes.c.id, chat_processes.c.pid).where(chat_processes.c.host == host)
    )
    return [(row.id, row.pid) for row in rows]


@dataclass(frozen=True, slots=True)
class AbandonedReply:
    message_id: uuid.UUID
    process_id: uuid.UUID
    content: str
    metadata: dict[str, Any]


async def abandoned_replies(
    conn: AsyncConnection, *, stale_before: datetime, dead: list[uuid.UUID]
) -> list[AbandonedReply]:
    """Replies generating in processes that are dead: known to be (`dead`), not reporting
    since `stale_before`, or not registered at all and started before `stale_before` (a
    process registers in the background as it starts, and may write a reply first)."""
    generating = chat_replies_generating.c
    stale = select(chat_processes.c.id).where(chat_processes.c.heartbeat_at < stale_before)
    registered = select(chat_processes.c.id)
    abandoned = or_(
        generating.process_id.in_(stale),
        and_(generating.process_id.not_in(registered), generating.started_at < stale_before),
    )
    if dead:
        abandoned = or_(abandoned, generating.process_id.in_(dead))
    return await _abandoned(conn, abandoned)


async def replies_of_process(
    conn: AsyncConnection, process_id: uuid.UUID, *, started_before: datetime
) -> list[uuid.UUID]:
    """The replies generating under `process_id` that started before `started_before`: their
    ids only (the process's own, to tell its orphans from the replies it produces)."""
    generating = chat_replies_generating.c
    stmt = select(generating.message_id).where(
        generating.process_id == process_id, generating.started_at < started_before
    )
    return [row.message_id for row in await conn.execute(stmt)]


async def abandoned_by_id(
    conn: AsyncConnection, message_ids: list[uuid.UUID]
) -> list[AbandonedReply]:
    """The replies among `message_ids` still generating, as a sweep finishes them."""
    return await _abandoned(conn, chat_replies_generating.c.message_id.in_(message_ids))


async def _abandoned(conn: AsyncConnection, condition: Any) -> list[AbandonedReply]:
    stmt = (
        select(
            chat_replies_generating.c.message_id,
            chat_replies_generating.c.process_id,
            chat_messages.c.content,
            chat_messages.c.metadata,
        )
        .join(chat_messages, chat_messages.c.id == chat_replies_generating.c.message_id)
        .where(condition)
    )
    return [
        AbandonedReply(row.message_id, row.process_id, row.content, row.metadata)
        for row in await conn.execute(stmt)
    ]


async def forget_dead_processes(
    conn: AsyncConnection, *, stale_before: datetime, dead: list[uuid.UUID]
) -> None:
    """Remove the rows of processes that are dead and generate nothing any more."""
    condition = chat_processes.c.heartbeat_at < stale_before
    if dead:
        condition = or_(condition, chat_processes.c.id.in_(dead))
    generating = select(chat_replies_generating.c.process_id)
    await conn.execute(
        delete(chat_processes).where(condition, chat_processes.c.id.not_in(generating))
    )


@dataclass(frozen=True, slots=True)
class ReplyState:
    """An assistant message as a stream that resumes it needs it: its stored text and status,
    and the process generating it (None once it is finished)."""

    message_id: uuid.UUID
    question_id: uuid.UUID | None
    content: str
    status: str
    process_id: uuid.UUID | None
    # Why it ended short (app/replies/metadata.py: "stopped", "shutdown", a provider error's
    # kind); None for a complete reply, or one still generated.
    error: str | None = None


def _reply_states(session_id: str) -> Any:
    return (
        select(
            chat_messages.c.id,
            chat_messages.c.parent_id,
            chat_messages.c.content,
            chat_messages.c.metadata,
            chat_replies_generating.c.process_id,
        )
        .select_from(
            chat_messages.outerjoin(
                chat_replies_generating,
                chat_replies_generating.c.message_id == chat_messages.c.id,
            )
        )
        .where(chat_messages.c.session_id == session_id, chat_messages.c.role == "assistant")
    )


def _reply_state(row: Any) -> ReplyState:
    return ReplyState(
        message_id=row.id,
        question_id=row.parent_id,
        content=row.content,
        status=str(row.metadata.get("status", "complete")),
        process_id=row.process_id,
        error=row.metadata.get("error"),
    )


async def find_reply(
    conn: AsyncConnection, session_id: str, message_id: uuid.UUID
) -> ReplyState | None:
    """The assistant message `message_id` of the session, if it is one."""
    row = (
        await conn.execute(_reply_states(session_id).where(chat_messages.c.id == message_id))
    ).one_or_none()
    return None if row is None else _reply_state(row)


async def generating_replies(conn: AsyncConnection, session_id: str) -> list[ReplyState]:
    """The session's replies being generated, the one started last first."""
    stmt = (
        _reply_states(session_id)
        .where(chat_replies_generating.c.process_id.is_not(None))
        .order_by(chat_replies_generating.c.started_at.desc(), chat_messages.c.ordinal.desc())
    )
    return [_reply_state(row) for row in await conn.execute(stmt)]
