"""The SQL of folders: the owner's folders, creating, renaming, moving and deleting one, and
what happens to its sessions. Each helper takes the connection of a transaction it does not
own."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.db.tables import NO_OWNER, chat_folders, chat_sessions
from app.tags.schemas import name_key


def parent_key(parent_id: uuid.UUID | None) -> str:
    """The parent's part of the siblings' unique key: a NULL would never clash."""
    return parent_id.hex if parent_id is not None else ""


async def folders_of(
    conn: AsyncConnection, *, owner: str | None, lock: bool = False
) -> list[dict[str, Any]]:
    """Every folder of `owner` (None: everyone's). With `lock`, their rows are locked for the
    rest of the transaction: moves and deletions of one owner's folders take turns, so that
    two moves cannot make a cycle between them."""
    stmt = select(
        chat_folders.c.id,
        chat_folders.c.user_id,
        chat_folders.c.parent_id,
        chat_folders.c.name,
        chat_folders.c.name_key,
        chat_folders.c.created_at,
    ).order_by(chat_folders.c.name_key, chat_folders.c.id)
    if owner is not None:
        stmt = stmt.where(chat_folders.c.user_id == owner)
    if lock:
        stmt = stmt.with_for_update()
    return [dict(row) for row in (await conn.execute(stmt)).mappings()]


async def find_folder(
    conn: AsyncConnection, folder_id: uuid.UUID, *, owner: str | None
) -> dict[str, Any] | None:
    """The folder (id, owner, parent), if `owner` (when given) has it."""
    stmt = select(chat_folders.c.id, chat_folders.c.user_id, chat_folders.c.parent_id).where(
        chat_folders.c.id == folder_id
    )
    if owner is not None:
        stmt = stmt.where(chat_folders.c.user_id == owner)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return dict(row) if row is not None else None


async def folder_is_owners(conn: AsyncConnection, folder_id: uuid.UUID, owner: str) -> bool:
    """Whether `owner` has the folder; on PostgreSQL its row is share-locked, so that a
    deletion of the folder waits for the transaction (or it for the deletion, and then the
    folder is gone)."""
    stmt = select(chat_folders.c.id).where(
        chat_folders.c.id == folder_id, chat_folders.c.user_id == owner
    )
    return (await conn.execute(stmt.with_for_update(key_share=True))).first() is not None


async def session_counts(conn: AsyncConnection, *, owner: str | None) -> dict[uuid.UUID, int]:
    """How many sessions (archived ones left out) each folder holds itself: for one owner a
    range of idx_chat_sessions_user_folder_list."""
    stmt = (
        select(chat_sessions.c.folder_id, func.count())
        .where(chat_sessions.c.active == true(), chat_sessions.c.folder_id.is_not(None))
        .group_by(chat_sessions.c.folder_id)
    )
    if owner == NO_OWNER:
        stmt = stmt.where(chat_sessions.c.user_id.is_(None))
    elif owner is not None:
        stmt = stmt.where(chat_sessions.c.user_id == owner)
    return {folder_id: int(count) for folder_id, count in await conn.execute(stmt)}


async def insert_folder(
    conn: AsyncConnection,
    *,
    folder_id: uuid.UUID,
    owner: str,
    parent_id: uuid.UUID | None,
    name: str,
    now: datetime,
) -> None:
    await conn.execute(
        chat_folders.insert().values(
            id=folder_id,
            user_id=owner,
            parent_id=parent_id,
            parent_key=parent_key(parent_id),
            name=name,
            name_key=name_key(name),
            created_at=now,
        )
    )


async def update_folder(
    conn: AsyncConnection,
    folder_id: uuid.UUID,
    *,
    name: str | None,
    move: bool,
    parent_id: uuid.UUID | None,
) -> None:
    values: dict[str, Any] = {}
    if name is not None:
        values |= {"name": name, "name_key": name_key(name)}
    if move:
        values |= {"parent_id": parent_id, "parent_key": parent_key(parent_id)}
    if values:
        await conn.execute(
            update(chat_folders).where(chat_folders.c.id == folder_id).values(values)
        )


async def delete_folder(
    conn: AsyncConnection, folder_id: uuid.UUID, *, parent_id: uuid.UUID | None, sessions: str
) -> None:
    """Delete the folder; its subfolders move to its parent, and its own sessions too
    (`sessions="move"`) or are deleted (`"delete"`)."""
    await conn.execute(
        update(chat_folders)
        .where(chat_folders.c.parent_id == folder_id)
        .values(parent_id=parent_id, parent_key=parent_key(parent_id))
    )
    in_folder = chat_sessions.c.folder_id == folder_id
    if sessions == "delete":
        await conn.execute(delete(chat_sessions).where(in_folder))
    else:
        await conn.execute(update(chat_sessions).where(in_folder).values(folder_id=parent_id))
    await conn.execute(delete(chat_folders).where(chat_folders.c.id == folder_id))
