"""The message tree as a whole: switching the current branch, and reading every message of
every branch page by page."""

import uuid

from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.errors import SessionNotFound
from app.messages import queries
from app.messages.schemas import SessionTree
from app.messages.service import message_of
from app.sessions import queries as session_queries
from app.sessions import service as session_service
from app.sessions.schemas import SessionDetail


async def switch_branch(
    db: Database,
    caller: Caller,
    session_id: str,
    message_id: uuid.UUID,
    *,
    limit: int | None = None,
) -> SessionDetail:
    """Make current the branch through `message_id`, continued downward by the remembered
    choices; remember it at every fork above; the session detail afterwards.

    Under the session's lock, so a concurrent append or switch sees the branch before or after
    this one, never half of it. The sidebar's count and preview become the new end's seq and
    branch preview: nothing is counted. `updated_at` is not changed (nothing was written)."""
    async with db.write() as conn:
        if not await session_queries.lock_session(conn, session_id, owner=caller.owner_filter):
            raise SessionNotFound()
        chosen = await message_of(conn, caller, session_id, message_id)
        leaf = await queries.branch_end_below(conn, session_id=session_id, message_id=chosen.id)
        await queries.remember_branch(conn, session_id=session_id, leaf_id=leaf.id)
        await queries.end_current_branch_at(conn, session_id=session_id, leaf=leaf)
        return await session_service.read_session_detail(conn, caller, session_id, limit=limit)


async def get_tree_page(
    db: Database, caller: Caller, session_id: str, *, after: int, limit: int
) -> SessionTree:
    """`limit` messages of every branch, in the order they were written, after the message
    written `after`-th (0: from the first)."""
    async with db.read() as conn:
        summary = await session_queries.get_session_summary(
            conn, session_id, owner=caller.owner_filter
        )
        if summary is None:
            raise SessionNotFound()
        rows = await queries.list_tree_page(conn, session_id, after_ordinal=after, limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return SessionTree.model_validate(
        {
            "session_id": session_id,
            "current_message_id": summary["current_message_id"],
            "messages": rows,
            "next_cursor": str(rows[-1]["ordinal"]) if has_more else None,
            "has_more": has_more,
        }
    )
