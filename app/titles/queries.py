"""The SQL of titles: a model's title written only where no one else's stands. Each helper
takes the connection of a transaction it does not own."""

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import TitleSource
from app.kit.db.tables import chat_sessions
from app.search import index as search_index
from app.sessions.queries import session_is


async def write_model_title(
    conn: AsyncConnection,
    session_id: str,
    title: str,
    *,
    over: tuple[str | None, TitleSource],
) -> bool:
    """Write a model's title, and its search entry; whether it was written.

    One conditional UPDATE: the row lock decides between it and a rename, which sets
    title_source to "user" and so can never be overwritten by a title that arrives after it
    (Open WebUI's issue 29767). Only over `over`, the (title, title_source) the title was
    asked for: beside the first reply, the seed's title of that first message (not a title
    set since, nor the seed's of a session deleted and created again under the same id
    meanwhile); on demand, the pair read when it was asked for (which may be a user's title,
    but not one set while it was being written).
    """
    expected_title, expected_source = over
    condition: ColumnElement[bool] = (chat_sessions.c.title_source == expected_source) & (
        chat_sessions.c.title.is_(None)
        if expected_title is None
        else chat_sessions.c.title == expected_title
    )
    stmt = (
        update(chat_sessions)
        .where(session_is(session_id, None), condition)
        .values(title=title, title_source="model")
        .returning(chat_sessions.c.user_id)
    )
    written = (await conn.execute(stmt)).one_or_none()
    if written is None:
        return False
    await search_index.replace_title(conn, session_id, written.user_id, title)
    return True


async def read_title(
    conn: AsyncConnection, session_id: str
) -> tuple[str | None, TitleSource] | None:
    """The session's stored title (None: none yet) and who wrote it; None if no session."""
    stmt = select(chat_sessions.c.title, chat_sessions.c.title_source).where(
        session_is(session_id, None)
    )
    row = (await conn.execute(stmt)).one_or_none()
    return None if row is None else (row.title, row.title_source)
