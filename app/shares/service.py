"""Share-link use cases: snapshot a session's current branch under a new link, read a link
(no sign-in), list and revoke the caller's links.

Each use case is one transaction; the SQL helpers below it take its connection.
"""

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.db.types import utc_now
from app.kit.errors import SessionNotFound, ShareNotFound
from app.messages import queries as message_queries
from app.replies.metadata import GENERATING
from app.sessions import queries as session_queries
from app.shares import queries
from app.shares.schemas import (
    SHARE_ID_BYTES,
    ShareCreated,
    SharedConversation,
    SharesList,
)

Clock = Callable[[], datetime]


def share_url(share_id: str, base_url: str | None) -> str:
    """The link's page: a path, or an absolute URL under `base_url`."""
    return f"{base_url or ''}/s/{share_id}"


def new_share_id() -> str:
    return secrets.token_urlsafe(SHARE_ID_BYTES)


def _in_snapshot(message: dict[str, Any]) -> bool:
    """A snapshot holds the messages with text that are finished: not a reply that failed
    before its first word, nor one still being written (its text is partial and would be
    frozen mid-sentence). A reply that stopped or was interrupted keeps the text it had."""
    content: str = message["content"]
    return bool(content.strip()) and message["metadata"].get("status") != GENERATING


async def create_share(
    db: Database,
    caller: Caller,
    session_id: str,
    *,
    expires_in_days: int | None,
    base_url: str | None,
    clock: Clock = utc_now,
) -> ShareCreated:
    """A new link to a copy of the session's current branch as it is now. The link belongs
    to the session's owner, whoever asked for it (a service caller acts for the owner)."""
    now = clock()
    expires_at = None if expires_in_days is None else now + timedelta(days=expires_in_days)
    share_id = new_share_id()
    async with db.write() as conn:
        # Locked, so that the summary and the branch are of one moment (a switch between the
        # two reads froze a branch that never was), and so that a deletion of the session
        # waits for the link (and takes it with it) or goes first (and the session is not
        # found): unlocked, the link's insert failed its foreign key, a 500.
        if not await session_queries.lock_session(conn, session_id, owner=caller.owner_filter):
            raise SessionNotFound()
        summary = await session_queries.get_session_summary(conn, session_id)
        if summary is None:
            raise SessionNotFound()
        branch = await message_queries.list_messages(
            conn, session_id, branch_length=summary["message_count"]
        )
        owner = await session_queries.get_session_owner(conn, session_id)
        await queries.purge_expired(conn, session_id, now=now)
        await queries.insert_share(
            conn,
            share_id=share_id,
            session_id=session_id,
            user_id=owner,
            title=summary["title"],
            created_at=now,
            expires_at=expires_at,
            messages=[message for message in branch if _in_snapshot(message)],
        )
    return ShareCreated(
        share_id=share_id,
        url=share_url(share_id, base_url),
        created_at=now,
        expires_at=expires_at,
    )


async def read_shared(db: Database, share_id: str, *, clock: Clock = utc_now) -> SharedConversation:
    """What a live link shows; a revoked, expired or unknown one is `ShareNotFound`."""
    async with db.read() as conn:
        shared = await queries.get_shared(conn, share_id, now=clock())
    if shared is None:
        raise ShareNotFound()
    return SharedConversation.model_validate(shared)


async def list_shares(
    db: Database,
    caller: Caller,
    *,
    user_id: str | None,
    session_id: str | None,
    limit: int,
    base_url: str | None,
    clock: Clock = utc_now,
) -> SharesList:
    """The live links of the caller (or, for trusted callers, of the user they name, or of
    everyone), newest first; of one session if `session_id` is given."""
    async with db.read() as conn:
        rows = await queries.list_shares(
            conn,
            owner=caller.acting_for(user_id),
            session_id=session_id,
            now=clock(),
            limit=limit,
        )
    for row in rows:
        row["url"] = share_url(row["share_id"], base_url)
    return SharesList.model_validate({"shares": rows})


async def revoke_share(
    db: Database, caller: Caller, share_id: str, *, clock: Clock = utc_now
) -> None:
    """Delete one of the caller's live links; anyone else's is `ShareNotFound`, as a link
    that does not exist."""
    async with db.write() as conn:
        deleted = await queries.delete_share(conn, share_id, owner=caller.owner_filter, now=clock())
    if not deleted:
        raise ShareNotFound()
