"""Chat use cases: send a message (plain or streamed); list, open, organise and delete sessions.

Each user-visible write is one transaction: a message and the session metadata it changes
are committed together. The assistant is never called while a transaction is open.
"""

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from app.core.errors import SessionNotFound, UserRequired
from app.db import fulltext, queries
from app.db.engine import Database
from app.db.queries import ListPosition, Role, SessionFilter, StoredMessage
from app.db.types import utc_now
from app.models.chat import (
    ChatRequest,
    ChatResponse,
    SessionDetail,
    SessionsListResponse,
    SessionSummary,
    SessionUpdate,
)
from app.services.access import Caller
from app.services.assistant import Assistant, AssistantError, Turn
from app.services.cursor import (
    SEARCH_MAX_OFFSET,
    InvalidCursor,
    SearchPosition,
    encode_cursor,
    encode_search_cursor,
    search_fingerprint,
)
from app.services.replies import FAILED, ReplyTimer, client_error, reply_metadata
from app.services.text import make_preview, make_snippet, make_title

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

    A session that exists but is not the caller's is reported as missing, and nothing is
    written: an id someone else chose cannot be written into, or even confirmed to exist.
    """
    owner = caller.acting_for(request.user_id)
    session_id = request.session_id or str(uuid.uuid4())
    now = utc_now()
    async with db.write() as conn:
        await queries.create_session_if_absent(conn, session_id=session_id, user_id=owner, now=now)
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
        )
        if stored is None:
            raise SessionNotFound()
    async with db.read() as conn:
        rows = await queries.list_recent_messages(
            conn, session_id=session_id, up_to_seq=stored.seq, limit=history_max_messages
        )
    history = [
        Turn(role=row["role"], content=row["content"])
        for row in rows
        if row["metadata"].get("status") != FAILED
    ]
    return AcceptedMessage(session_id=session_id, message=stored, history=history)


async def process_chat(
    db: Database,
    assistant: Assistant,
    caller: Caller,
    request: ChatRequest,
    *,
    history_max_messages: int,
) -> ChatResponse:
    """Save the user's message, ask the assistant with the session's history, save the reply."""
    accepted = await accept_user_message(
        db, caller, request, history_max_messages=history_max_messages
    )
    timer = ReplyTimer()
    try:
        reply = await assistant.reply(accepted.history)
    except Exception as exc:
        failure = as_assistant_error(exc, accepted.session_id)
        # The failed reply stays visible in the history, as failed rather than missing.
        await save_message(
            db,
            session_id=accepted.session_id,
            role="assistant",
            content="",
            metadata=reply_metadata(
                provider=assistant.provider,
                model=assistant.model,
                status="failed",
                timer=timer,
                error=failure.kind,
            ),
        )
        raise client_error(failure) from exc
    timer.token_arrived()
    stored = await save_message(
        db,
        session_id=accepted.session_id,
        role="assistant",
        content=reply.content,
        metadata=reply_metadata(
            provider=assistant.provider,
            model=assistant.model,
            status="complete",
            timer=timer,
            end=reply.end,
        ),
    )
    return ChatResponse(
        session_id=accepted.session_id, response=reply.content, message_id=stored.id
    )


def as_assistant_error(exc: Exception, session_id: str) -> AssistantError:
    """Provider failures as they are; anything else is a bug, logged with its traceback."""
    if isinstance(exc, AssistantError):
        return exc
    logger.error("assistant crashed for session %s", session_id, exc_info=exc)
    return AssistantError(repr(exc), kind="unavailable")


async def get_sessions_list(
    db: Database,
    caller: Caller,
    *,
    user_id: str | None,
    archived: bool = False,
    page: int = 1,
    page_size: int = 50,
    cursor: ListPosition | SearchPosition | None = None,
    limit: int | None = None,
    include_total: bool = True,
    query: str | None = None,
) -> SessionsListResponse:
    """One page of sessions, pinned first, then most recent activity first: the caller's own,
    or for trusted callers everyone's or the named user's. With a `query`, the sessions whose
    title or messages contain its words, best match first.

    With `cursor` or `limit` the page starts after the cursor's session (keyset: as fast at
    any depth, and stable while sessions move); otherwise it is page `page` of `page_size`.
    A cursor from another listing or search is refused with `InvalidCursor`.
    """
    where = SessionFilter(user_id=caller.acting_for(user_id), archived=archived)
    cursor_mode = cursor is not None or limit is not None
    size = (limit or page_size) if cursor_mode else page_size
    if query is not None and query.strip():
        return await _search_sessions(
            db,
            where,
            query_words=fulltext.query_words(query),
            size=size,
            page=None if cursor_mode else page,
            cursor=cursor,
            include_total=include_total,
        )
    if isinstance(cursor, SearchPosition):
        raise InvalidCursor("this cursor belongs to a search: pass the same q")
    async with db.read() as conn:
        total = await queries.count_sessions(conn, where=where) if include_total else None
        rows = await queries.list_session_summaries(
            conn,
            where=where,
            limit=size + 1,  # one more than asked tells whether there are more
            offset=0 if cursor_mode else (page - 1) * size,
            after=cursor,
        )
    has_more = len(rows) > size
    rows = rows[:size]
    last = rows[-1] if rows else None
    # One validation of the whole body, as for a session's messages (get_session).
    return SessionsListResponse.model_validate(
        {
            "sessions": rows,
            "total": total,
            "page": None if cursor_mode else page,
            "page_size": size,
            "total_pages": None if cursor_mode or total is None else math.ceil(total / size),
            "next_cursor": (
                encode_cursor(ListPosition(last["pinned"], last["updated_at"], last["id"]))
                if has_more and last is not None
                else None
            ),
            "has_more": has_more,
        }
    )


async def _search_sessions(
    db: Database,
    where: SessionFilter,
    *,
    query_words: list[str],
    size: int,
    page: int | None,
    cursor: ListPosition | SearchPosition | None,
    include_total: bool,
) -> SessionsListResponse:
    """A page of search results, in page mode (`page`) or cursor mode (an offset cursor)."""
    fingerprint = search_fingerprint(query_words, where.user_id, where.archived)
    if isinstance(cursor, ListPosition):
        raise InvalidCursor("this cursor belongs to the plain listing, not a search")
    if cursor is not None and cursor.fingerprint != fingerprint:
        raise InvalidCursor("this cursor belongs to another search")
    offset = (page - 1) * size if page is not None else (cursor.offset if cursor else 0)
    # Results stop at SEARCH_MAX_OFFSET: nobody pages that far through a search, and deeper
    # offsets would only cost more.
    shown = max(0, min(size, SEARCH_MAX_OFFSET - offset))
    rows: list[dict[str, Any]] = []
    total: int | None = 0 if include_total else None
    snippets: dict[str, str] = {}
    # A search without a single word (only punctuation, say) matches nothing.
    if query_words:
        async with db.read() as conn:
            search = queries.SearchQuery(query_words, where)
            if include_total:
                total = await queries.count_search_results(conn, search)
            if shown:
                rows = await queries.search_session_summaries(
                    conn, search, limit=shown + 1, offset=offset
                )
                snippets = await queries.best_matching_messages(
                    conn, search, [row["session_id"] for row in rows[:shown]]
                )
    next_offset = offset + shown
    has_more = len(rows) > shown and next_offset < SEARCH_MAX_OFFSET
    rows = rows[:shown]
    for row in rows:
        matching = snippets.get(row["session_id"])
        row["snippet"] = make_snippet(matching, query_words) if matching is not None else None
    return SessionsListResponse.model_validate(
        {
            "sessions": rows,
            "total": total,
            "page": page,
            "page_size": size,
            "total_pages": None if page is None or total is None else math.ceil(total / size),
            "next_cursor": (
                encode_search_cursor(SearchPosition(next_offset, fingerprint)) if has_more else None
            ),
            "has_more": has_more,
        }
    )


async def get_session(
    db: Database,
    caller: Caller,
    session_id: str,
    *,
    before: int | None = None,
    limit: int | None = None,
) -> SessionDetail:
    """A session's summary and its messages, oldest first: all of them, or with `limit` the
    newest page before the message numbered `before`."""
    async with db.read() as conn:
        summary = await queries.get_session_summary(conn, session_id, owner=caller.owner_filter)
        if summary is None:
            raise SessionNotFound()
        messages = await queries.list_messages(conn, session_id, before=before, limit=limit)
    first_seq = messages[0]["seq"] if messages else None
    has_more = first_seq is not None and first_seq > 1
    # One validation of the whole body: pydantic-core walks the messages in Rust.
    return SessionDetail.model_validate(
        {
            **summary,
            "messages": messages,
            "has_more_messages": has_more,
            "messages_before": first_seq if has_more else None,
        }
    )


async def update_session(
    db: Database, caller: Caller, session_id: str, changes: SessionUpdate
) -> SessionSummary:
    """Rename, pin, archive or unarchive a session; its summary afterwards."""
    async with db.write() as conn:
        found = await queries.update_session(
            conn,
            session_id,
            owner=caller.owner_filter,
            title=changes.title,
            pinned=changes.pinned,
            archived=changes.archived,
        )
        if not found:
            raise SessionNotFound()
        summary = await queries.get_session_summary(conn, session_id)
    return SessionSummary.model_validate(summary)


async def delete_all_sessions(db: Database, caller: Caller, *, user_id: str | None) -> int:
    """Delete every session of a user: the caller's own, or whom a trusted caller names."""
    owner = caller.acting_for(user_id)
    if owner is None:
        raise UserRequired("name the user whose sessions to delete (user_id)")
    async with db.write() as conn:
        return await queries.delete_sessions_of(conn, owner)


async def delete_session(db: Database, caller: Caller, session_id: str) -> None:
    """Delete a session and its messages."""
    async with db.write() as conn:
        deleted = await queries.delete_session(conn, session_id, owner=caller.owner_filter)
    if not deleted:
        raise SessionNotFound()
