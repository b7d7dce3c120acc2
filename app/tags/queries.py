"""The SQL of tags: a session's tags, replacing them, the user's tags with their counts,
renaming (and merging) and deleting. Each helper takes the connection of a transaction it does
not own."""

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from app.kit.db.tables import chat_session_tags, chat_sessions, chat_tags
from app.tags.schemas import name_key

_SESSIONS = bindparam("tag_sessions", expanding=True, type_=Text())
# A link and its tag, joined on their owner too: the same row either way (a link has its tag's
# owner), and the join Citus can run on one node (docs/scaling.md).
_LINKED = and_(
    chat_tags.c.id == chat_session_tags.c.tag_id,
    chat_tags.c.user_id == chat_session_tags.c.user_id,
)


@functools.cache
def _tags_of_sessions() -> Select[Any]:
    return (
        select(chat_session_tags.c.session_id, chat_tags.c.name)
        .join(chat_tags, _LINKED)
        .where(chat_session_tags.c.session_id.in_(_SESSIONS))
        .order_by(chat_session_tags.c.session_id, chat_session_tags.c.position)
    )


async def tags_of_sessions(
    conn: AsyncConnection, session_ids: Sequence[str]
) -> dict[str, list[str]]:
    """Each session's tags, in the order they were given (sessions without any are left out).
    Pass only the sessions whose summary says `tagged` (`is_tagged`)."""
    if not session_ids:
        return {}
    tags: dict[str, list[str]] = {}
    rows = await conn.execute(_tags_of_sessions(), {"tag_sessions": list(session_ids)})
    for session_id, name in rows:
        tags.setdefault(session_id, []).append(name)
    return tags


def is_tagged() -> ColumnElement[bool]:
    """The session (a row of chat_sessions in the outer query) carries any tag: one probe of
    chat_session_tags' primary key. A page whose sessions carry none then needs no query for
    their tags (`tags_of_sessions`), which was a fifth of the sidebar's CPU per request."""
    return exists(select(1).where(chat_session_tags.c.session_id == chat_sessions.c.session_id))


def has_tag(key: Any, owner: Any | None = None) -> ColumnElement[bool]:
    """The session (a row of chat_sessions in the outer query) carries the tag whose
    case-folded name is `key` (of `owner`, when given: a user's listing). A semi-join: one
    probe of chat_session_tags' primary key per session, or the tag's sessions from
    idx_chat_session_tags_tag. With the owner, the tag is one row of its unique key: without
    it PostgreSQL took every user's tag of that name and hashed every link of the table
    (22 ms at 50k sessions, growing with the table)."""
    tag = [chat_tags.c.name_key == key]
    if owner is not None:
        tag.append(chat_tags.c.user_id == owner)
    return exists(
        select(1)
        .select_from(chat_session_tags.join(chat_tags, _LINKED))
        .where(chat_session_tags.c.session_id == chat_sessions.c.session_id, *tag)
    )


# The first key of the owner's tag lock (`lock_owner_tags`): its own space of advisory locks.
_TAGS_LOCK = 0x7A6


async def lock_owner_tags(conn: AsyncConnection, owner: str) -> None:
    """Make the transaction's changes of the owner's tags (a session's, a rename, a
    deletion, unused tags' removal) take turns, on PostgreSQL until it ends (SQLite's write
    transactions take turns already). Row locks were not enough: a tag deleted as unused
    while another session was being tagged with it took that session's new link with it
    (cascade) after its PATCH had answered, and two renames, or a rename and a session's
    tagging, deadlocked or broke the unique name (500s)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_TAGS_LOCK, func.hashtext(owner))))


async def ensure_tags(
    conn: AsyncConnection, owner: str, names: Sequence[str], *, now: datetime
) -> list[uuid.UUID]:
    """The ids of the owner's tags with these names (case-insensitively), in order, creating
    those that do not exist yet with the spelling given; an existing tag keeps its own."""
    keys = [name_key(name) for name in names]
    if not keys:
        return []
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(chat_tags).on_conflict_do_nothing(
        index_elements=[chat_tags.c.user_id, chat_tags.c.name_key]
    )
    await conn.execute(
        stmt,
        [
            {"id": uuid.uuid4(), "user_id": owner, "name": name, "name_key": key, "created_at": now}
            for name, key in zip(names, keys, strict=True)
        ],
    )
    rows = await conn.execute(
        select(chat_tags.c.name_key, chat_tags.c.id).where(
            chat_tags.c.user_id == owner, chat_tags.c.name_key.in_(keys)
        )
    )
    ids: dict[str, uuid.UUID] = {key: tag_id for key, tag_id in rows}  # noqa: C416
    return [ids[key] for key in keys]


async def replace_session_tags(
    conn: AsyncConnection, session_id: str, owner: str, tag_ids: Sequence[uuid.UUID]
) -> None:
    """The session carries exactly these tags, in this order; tags of the owner's that no
    session carries any more are deleted."""
    await conn.execute(
        delete(chat_session_tags).where(chat_session_tags.c.session_id == session_id)
    )
    if tag_ids:
        await conn.execute(
            chat_session_tags.insert(),
            [
                {
                    "session_id": session_id,
                    "tag_id": tag_id,
                    "position": position,
                    "user_id": owner,
                }
                for position, tag_id in enumerate(tag_ids)
            ],
        )
    await delete_unused_tags(conn, owner)


async def delete_unused_tags(conn: AsyncConnection, owner: str) -> None:
    """The owner's tags no session carries (left by the sessions' deletion, or a change)."""
    used = exists().where(_LINKED)
    await conn.execute(delete(chat_tags).where(chat_tags.c.user_id == owner, ~used))


def _counted_tags() -> Select[Any]:
    count = func.count(chat_session_tags.c.session_id)
    return (
        select(chat_tags.c.id.label("tag_id"), chat_tags.c.name, count.label("session_count"))
        .join(chat_session_tags, _LINKED)
        .group_by(chat_tags.c.id, chat_tags.c.name, chat_tags.c.name_key)
    )


async def list_tags(conn: AsyncConnection, *, owner: str | None) -> list[dict[str, Any]]:
    """The tags some session carries, by case-folded name: the owner's, or everyone's."""
    stmt = _counted_tags().order_by(chat_tags.c.name_key, chat_tags.c.id)
    if owner is not None:
        stmt = stmt.where(chat_tags.c.user_id == owner)
    return [dict(row) for row in (await conn.execute(stmt)).mappings()]


async def find_tag(
    conn: AsyncConnection, tag_id: uuid.UUID, *, owner: str | None
) -> dict[str, Any] | None:
    """The tag (its id, owner and name), if `owner` (when given) has it."""
    stmt = select(chat_tags.c.id, chat_tags.c.user_id, chat_tags.c.name).where(
        chat_tags.c.id == tag_id
    )
    if owner is not None:
        stmt = stmt.where(chat_tags.c.user_id == owner)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return dict(row) if row is not None else None


async def tag_summary(conn: AsyncConnection, tag_id: uuid.UUID) -> dict[str, Any] | None:
    stmt = _counted_tags().where(chat_tags.c.id == tag_id)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return dict(row) if row is not None else None


async def rename_tag(conn: AsyncConnection, tag: dict[str, Any], name: str) -> uuid.UUID:
    """Renames the tag; into another tag of the owner's with that name (ignoring case), the
    two merge: its sessions carry that one instead (where they had both, once, at the
    other's position). The id of the tag that has the name afterwards."""
    key = name_key(name)
    other = (
        await conn.execute(
            select(chat_tags.c.id).where(
                chat_tags.c.user_id == tag["user_id"],
                chat_tags.c.name_key == key,
                chat_tags.c.id != tag["id"],
            )
        )
    ).scalar()
    if other is None:
        await conn.execute(
            update(chat_tags).where(chat_tags.c.id == tag["id"]).values(name=name, name_key=key)
        )
        return uuid.UUID(str(tag["id"]))
    # Links of sessions that carry both stay the other tag's, and go with this tag.
    carried = chat_session_tags.alias("carried")
    both = exists().where(
        carried.c.session_id == chat_session_tags.c.session_id, carried.c.tag_id == other
    )
    await conn.execute(
        update(chat_session_tags)
        .where(chat_session_tags.c.tag_id == tag["id"], ~both)
        .values(tag_id=other)
    )
    await conn.execute(delete(chat_tags).where(chat_tags.c.id == tag["id"]))
    await conn.execute(update(chat_tags).where(chat_tags.c.id == other).values(name=name))
    return uuid.UUID(str(other))


async def delete_tag(conn: AsyncConnection, tag_id: uuid.UUID) -> None:
    """The tag, and with it (cascade) every session's link to it."""
    await conn.execute(delete(chat_tags).where(chat_tags.c.id == tag_id))
