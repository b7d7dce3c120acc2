"""The SQL of share links: storing a snapshot, reading it, listing and deleting links. Each
helper takes the connection of a transaction it does not own."""

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Text, bindparam, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Delete, Select

from app.kit.db.rows import as_dicts
from app.kit.db.tables import NO_OWNER, chat_share_messages, chat_shares
from app.kit.db.types import UTCDateTime

_SHARE_ID = bindparam("share_id", type_=Text())
_NOW = bindparam("now", type_=UTCDateTime())
_OWNER = bindparam("owner", type_=Text())
_SESSION_ID = bindparam("session_id", type_=Text())
_LIMIT = bindparam("limit", type_=Integer())

SHARE_COLUMNS = (
    chat_shares.c.share_id,
    chat_shares.c.session_id,
    chat_shares.c.title,
    chat_shares.c.created_at,
    chat_shares.c.expires_at,
)


def _live() -> Any:
    """Not expired at `now` (a link without an expiry never is)."""
    return or_(chat_shares.c.expires_at.is_(None), chat_shares.c.expires_at > _NOW)


async def insert_share(
    conn: AsyncConnection,
    *,
    share_id: str,
    session_id: str,
    user_id: str | None,
    title: str,
    created_at: datetime,
    expires_at: datetime | None,
    messages: list[dict[str, Any]],
) -> None:
    """Store a link and its snapshot's messages (`role`, `content`, `created_at`, in order)."""
    await conn.execute(
        insert(chat_shares).values(
            share_id=share_id,
            session_id=session_id,
            user_id=user_id,
            title=title,
            created_at=created_at,
            expires_at=expires_at,
        )
    )
    if messages:
        await conn.execute(
            insert(chat_share_messages),
            [
                {
                    "share_id": share_id,
                    "position": position,
                    "role": message["role"],
                    "content": message["content"],
                    "created_at": message["created_at"],
                    "user_id": NO_OWNER if user_id is None else user_id,
                }
                for position, message in enumerate(messages, start=1)
            ],
        )


@functools.cache
def _shared() -> Select[Any]:
    return select(chat_shares.c.title, chat_shares.c.created_at).where(
        chat_shares.c.share_id == _SHARE_ID, _live()
    )


@functools.cache
def _shared_messages() -> Select[Any]:
    return (
        select(
            chat_share_messages.c.role,
            chat_share_messages.c.content,
            chat_share_messages.c.created_at,
        )
        .where(chat_share_messages.c.share_id == _SHARE_ID)
        .order_by(chat_share_messages.c.position)
    )


async def get_shared(
    conn: AsyncConnection, share_id: str, *, now: datetime
) -> dict[str, Any] | None:
    """The snapshot behind a live link (title, created_at, messages); None if there is no
    such link or it expired."""
    parameters = {"share_id": share_id, "now": now}
    rows = as_dicts(await conn.execute(_shared(), parameters))
    if not rows:
        return None
    messages = as_dicts(await conn.execute(_shared_messages(), parameters))
    return {**rows[0], "messages": messages}


@functools.cache
def _list(*, for_user: bool, for_session: bool) -> Select[Any]:
    conditions = [_live()]
    if for_user:
        conditions.append(chat_shares.c.user_id == _OWNER)
    if for_session:
        conditions.append(chat_shares.c.session_id == _SESSION_ID)
    return (
        select(*SHARE_COLUMNS)
        .where(*conditions)
        .order_by(chat_shares.c.created_at.desc(), chat_shares.c.share_id.desc())
        .limit(_LIMIT)
    )


async def list_shares(
    conn: AsyncConnection,
    *,
    owner: str | None,
    session_id: str | None,
    now: datetime,
    limit: int,
) -> list[dict[str, Any]]:
    """Live links, newest first: `owner`'s (None: everyone's), of one session if given."""
    stmt = _list(for_user=owner is not None, for_session=session_id is not None)
    parameters = {"owner": owner, "session_id": session_id, "now": now, "limit": limit}
    return as_dicts(await conn.execute(stmt, parameters))


@functools.cache
def _delete(*, owned: bool) -> Delete:
    condition = chat_shares.c.share_id == _SHARE_ID
    if owned:
        condition = condition & (chat_shares.c.user_id == _OWNER)
    # An expired link is gone already, as far as anyone can tell: revoking it is a 404 too.
    return delete(chat_shares).where(condition, _live())


async def delete_share(
    conn: AsyncConnection, share_id: str, *, owner: str | None, now: datetime
) -> bool:
    """Delete a live link (its messages go by cascade), if `owner` (when given) owns it; True
    when it existed."""
    result = await conn.execute(
        _delete(owned=owner is not None), {"share_id": share_id, "owner": owner, "now": now}
    )
    return bool(result.rowcount)


@functools.cache
def _purge_expired() -> Delete:
    return delete(chat_shares).where(
        chat_shares.c.session_id == _SESSION_ID, chat_shares.c.expires_at <= _NOW
    )


async def purge_expired(conn: AsyncConnection, session_id: str, *, now: datetime) -> None:
    """Delete a session's expired links: nobody can read, list or revoke them any more."""
    await conn.execute(_purge_expired(), {"session_id": session_id, "now": now})
