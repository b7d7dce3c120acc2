"""Session use cases: the sidebar's list (cursor and page modes; a search hands over to
app/search/service.py), opening, organising and deleting sessions.

Each use case is one transaction; the SQL helpers below it take its connection.
"""

import math
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.access import Caller
from app.folders import queries as folder_queries
from app.kit.db.engine import Database
from app.kit.db.tables import NO_OWNER
from app.kit.errors import FolderNotFound, SessionNotFound, UserRequired
from app.messages import queries as message_queries
from app.search import fulltext
from app.search import service as search_service
from app.sessions import queries
from app.sessions.cursor import InvalidCursor, SearchPosition, encode_cursor, list_fingerprint
from app.sessions.queries import ListPosition, SessionFilter
from app.sessions.schemas import SessionDetail, SessionsListResponse, SessionSummary, SessionUpdate
from app.tags import queries as tag_queries
from app.tags import service as tag_service
from app.tags.schemas import name_key


async def with_tags(conn: AsyncConnection, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The session rows (dicts or mappings), each with its `tags`: one query for them all."""
    tags = await tag_queries.tags_of_sessions(
        conn, [row["session_id"] for row in rows if row["tagged"]]
    )
    return [{**row, "tags": tags.get(row["session_id"], [])} for row in rows]


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
    folder: uuid.UUID | Literal["none"] | None = None,
    tags: Sequence[str] = (),
) -> SessionsListResponse:
    """One page of sessions, pinned first, then most recent activity first: the caller's own,
    or for trusted callers everyone's or the named user's. With a `query`, the sessions whose
    title or messages contain its words, best match first.

    With `cursor` or `limit` the page starts after the cursor's session (keyset: as fast at
    any depth, and stable while sessions move); otherwise it is page `page` of `page_size`.
    A cursor from another listing or search is refused with `InvalidCursor`.

    `folder` keeps one folder's sessions (NO_FOLDER: those in none), `tags` those that carry
    every one of them (ignoring case).
    """
    # In one order: the same tags in another order are the same filter, whose cursors they
    # take.
    keys = tuple(sorted({name_key(tag) for tag in tags}))
    where = SessionFilter(
        user_id=caller.acting_for(user_id), archived=archived, folder=folder, tags=keys
    )
    cursor_mode = cursor is not None or limit is not None
    size = (limit or page_size) if cursor_mode else page_size
    if query is not None and query.strip():
        return await search_service.search_sessions(
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
    fingerprint = list_fingerprint(where)
    if cursor is not None and cursor.filters != fingerprint:
        raise InvalidCursor("this cursor belongs to a listing with other filters")
    # The sidebar's list, on the read replica if any: the web page merges it with what it
    # knows, so a list a moment behind the user's last write costs nothing (docs/scaling.md).
    # With its total, two statements that must agree: one snapshot.
    async with db.replica_read(snapshot=include_total) as conn:
        total = await queries.count_sessions(conn, where=where) if include_total else None
        rows = await queries.list_session_summaries(
            conn,
            where=where,
            limit=size + 1,  # one more than asked tells whether there are more
            offset=0 if cursor_mode else (page - 1) * size,
            after=cursor,
        )
        has_more = len(rows) > size
        rows = await with_tags(conn, rows[:size])
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
                encode_cursor(
                    ListPosition(last["pinned"], last["updated_at"], last["id"], fingerprint)
                )
                if has_more and last is not None
                else None
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
    """A session's summary and its current branch's messages, oldest first: all of them, or
    with `limit` the newest page before the message numbered (seq) `before`."""
    # The summary and its branch, two statements that must agree (a switch between them
    # tore the branch): one snapshot.
    async with db.read(snapshot=True) as conn:
        return await read_session_detail(conn, caller, session_id, before=before, limit=limit)


async def read_session_detail(
    conn: AsyncConnection,
    caller: Caller,
    session_id: str,
    *,
    before: int | None = None,
    limit: int | None = None,
) -> SessionDetail:
    """`get_session`, in a transaction of the caller's."""
    found = await queries.get_session_summary(conn, session_id, owner=caller.owner_filter)
    if found is None:
        raise SessionNotFound()
    [summary] = await with_tags(conn, [found])
    messages = await message_queries.list_messages(
        conn,
        session_id,
        branch_length=summary["message_count"],
        before=before,
        limit=limit,
    )
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


async def get_session_tree(db: Database, caller: Caller, session_id: str) -> SessionDetail:
    """A session's summary and every message of every branch, in the order they were
    written; `current_message_id` says which branch is current."""
    async with db.read() as conn:
        found = await queries.get_session_summary(conn, session_id, owner=caller.owner_filter)
        if found is None:
            raise SessionNotFound()
        [summary] = await with_tags(conn, [found])
        messages = await message_queries.list_tree(conn, session_id)
    return SessionDetail.model_validate(
        {**summary, "messages": messages, "has_more_messages": False, "messages_before": None}
    )


async def update_session(
    db: Database, caller: Caller, session_id: str, changes: SessionUpdate
) -> SessionSummary:
    """Rename, pin, archive or unarchive a session, put it in a folder or take it out, or
    replace its tags; its summary afterwards. A folder that is not one of the session
    owner's is a FolderNotFound, and nothing changes."""
    try:
        return await _update_session(db, caller, session_id, changes)
    except IntegrityError:
        # A tag this change links to was deleted meanwhile (DELETE /tags, a merge, or another
        # change of tags that left it unused) after it was read: the second attempt makes it
        # again. Without tags in the change there is nothing to race with.
        if changes.tags is None:
            raise
        return await _update_session(db, caller, session_id, changes)


async def _update_session(
    db: Database, caller: Caller, session_id: str, changes: SessionUpdate
) -> SessionSummary:
    given = changes.model_fields_set
    folder: uuid.UUID | Literal["keep"] | None = (
        changes.folder_id if "folder_id" in given else "keep"
    )
    async with db.write() as conn:
        locked = await queries.lock_session_owner(conn, session_id, owner=caller.owner_filter)
        if locked is None:
            raise SessionNotFound()
        # Folders and tags of a session without a user are the empty owner's.
        owner = locked[0] or NO_OWNER
        if isinstance(folder, uuid.UUID) and not await folder_queries.folder_is_owners(
            conn, folder, owner
        ):
            raise FolderNotFound()
        if given & {"title", "pinned", "archived", "folder_id"}:
            await queries.update_session(
                conn,
                session_id,
                owner=None,
                title=changes.title,
                pinned=changes.pinned,
                archived=changes.archived,
                folder=folder,
            )
        if changes.tags is not None:
            await tag_service.set_session_tags(conn, session_id, owner, changes.tags)
        found = await queries.get_session_summary(conn, session_id)
        [summary] = await with_tags(conn, [found])
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
