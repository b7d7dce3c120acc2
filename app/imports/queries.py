"""The SQL of imports: an import's row (progress and outcome), the sources already imported,
and the session-level columns an import sets. Each helper takes the connection of a
transaction it does not own."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import TitleSource
from app.kit.db.tables import chat_import_sources, chat_imports, chat_processes, chat_sessions
from app.search import index as search_index

IMPORT_COLUMNS = (
    chat_imports.c.id,
    chat_imports.c.status,
    chat_imports.c.format,
    chat_imports.c.total,
    chat_imports.c.done,
    chat_imports.c.imported,
    chat_imports.c.skipped,
    chat_imports.c.failed,
    chat_imports.c.error,
    chat_imports.c.created_at,
    chat_imports.c.updated_at,
)


async def create_import(
    conn: AsyncConnection,
    *,
    import_id: uuid.UUID,
    user_id: str | None,
    owner_key: str,
    export_format: str,
    process_id: uuid.UUID,
    now: datetime,
) -> None:
    """Record a running import. IntegrityError if the owner has one running already (the
    unique index over running imports decides, so two uploads at once cannot both start)."""
    stmt = insert(chat_imports).values(
        id=import_id,
        user_id=user_id,
        owner_key=owner_key,
        status="running",
        format=export_format,
        total=None,
        done=0,
        imported=0,
        skipped=0,
        failed=[],
        error=None,
        process_id=process_id,
        created_at=now,
        updated_at=now,
    )
    await conn.execute(stmt)


async def running_import_of(conn: AsyncConnection, owner_key: str) -> bool:
    stmt = select(chat_imports.c.id).where(
        chat_imports.c.owner_key == owner_key, chat_imports.c.status == "running"
    )
    return (await conn.execute(stmt)).first() is not None


async def get_import(
    conn: AsyncConnection, import_id: uuid.UUID, *, owner: str | None
) -> dict[str, Any] | None:
    """The import (of `owner`, when given); None if there is none."""
    stmt = select(*IMPORT_COLUMNS).where(chat_imports.c.id == import_id)
    if owner is not None:
        stmt = stmt.where(chat_imports.c.user_id == owner)
    row = (await conn.execute(stmt)).one_or_none()
    return None if row is None else dict(row._mapping)


async def record_progress(
    conn: AsyncConnection, import_id: uuid.UUID, *, now: datetime, **values: Any
) -> None:
    """Set the import's counters (total, done, imported, skipped, failed) while it runs."""
    await conn.execute(
        update(chat_imports)
        .where(chat_imports.c.id == import_id, chat_imports.c.status == "running")
        .values(**values, updated_at=now)
    )


async def finish_import(
    conn: AsyncConnection,
    import_id: uuid.UUID,
    *,
    status: str,
    error: str | None,
    now: datetime,
) -> None:
    await conn.execute(
        update(chat_imports)
        .where(chat_imports.c.id == import_id, chat_imports.c.status == "running")
        .values(status=status, error=error, updated_at=now)
    )


async def fail_abandoned_imports(
    conn: AsyncConnection,
    *,
    stale_before: datetime,
    dead: list[uuid.UUID],
    error: str,
    now: datetime,
) -> int:
    """Mark failed the running imports of processes that are dead (as
    app/replies/queries.py's `abandoned_replies` tells them): their upload was on that
    process's disk, so no other process can finish them. How many there were."""
    stale = select(chat_processes.c.id).where(chat_processes.c.heartbeat_at < stale_before)
    registered = select(chat_processes.c.id)
    imports = chat_imports.c
    abandoned = or_(
        imports.process_id.in_(stale),
        and_(imports.process_id.not_in(registered), imports.updated_at < stale_before),
    )
    if dead:
        abandoned = or_(abandoned, imports.process_id.in_(dead))
    result = await conn.execute(
        update(chat_imports)
        .where(imports.status == "running", abandoned)
        .values(status="failed", error=error, updated_at=now)
    )
    return int(result.rowcount or 0)


async def fail_imports_of(
    conn: AsyncConnection, process_id: uuid.UUID, *, error: str, now: datetime
) -> None:
    """Mark failed the running imports of this process (it is stopping)."""
    await conn.execute(
        update(chat_imports)
        .where(chat_imports.c.process_id == process_id, chat_imports.c.status == "running")
        .values(status="failed", error=error, updated_at=now)
    )


async def is_imported(conn: AsyncConnection, *, owner_key: str, source_id: str) -> bool:
    stmt = select(chat_import_sources.c.session_id).where(
        chat_import_sources.c.user_id == owner_key,
        chat_import_sources.c.source_id == source_id,
    )
    return (await conn.execute(stmt)).first() is not None


async def remember_source(
    conn: AsyncConnection, *, owner_key: str, source_id: str, session_id: str
) -> None:
    await conn.execute(
        insert(chat_import_sources).values(
            user_id=owner_key, source_id=source_id, session_id=session_id
        )
    )


async def set_imported_session(
    conn: AsyncConnection,
    session_id: str,
    *,
    title: str | None,
    title_source: TitleSource,
    pinned: bool,
    archived: bool,
    metadata: dict[str, Any],
    updated_at: datetime | None,
) -> None:
    """What an imported session keeps besides its messages: its title (and who wrote it),
    the title's search entry, pin, archive state and origin; with `updated_at`, its time of
    last activity (a session without messages)."""
    values: dict[str, Any] = {"pinned": pinned, "active": not archived, "metadata": metadata}
    if title is not None:
        values |= {"title": title, "title_source": title_source}
    if updated_at is not None:
        values["updated_at"] = updated_at
    session = (
        await conn.execute(
            update(chat_sessions)
            .where(chat_sessions.c.session_id == session_id)
            .values(values)
            .returning(chat_sessions.c.user_id, chat_sessions.c.title)
        )
    ).one()
    # The title's entry: the one given, or the automatic one its messages set (stored
    # without their entries, app/imports/service.py).
    if session.title is not None:
        await search_index.replace_title(conn, session_id, session.user_id, session.title)
