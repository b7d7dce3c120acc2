"""Writes to the search index (chat_search): one entry per session title and per message with
words, added in the transaction that stores the text. SQLite's FTS5 table follows chat_search
by triggers (migrations 0004 and 0015)."""

import functools
from typing import Any

from sqlalchemy import Insert, String, bindparam, delete, func, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.db.tables import SEARCH_TITLE_SEQ, chat_search
from app.search import fulltext


async def index_text(
    conn: AsyncConnection,
    session_id: str,
    user_id: str | None,
    seq: int,
    text: str,
    *,
    if_absent: bool = False,
) -> None:
    """Add a title (`seq` 0) or message (`seq` its ordinal) to the search index, as
    app/search/fulltext.py splits it into words; text without words is left out."""
    words = fulltext.document(text)
    if not words:
        return
    postgres = conn.dialect.name == "postgresql"
    stmt = _insert(postgres=postgres, title=seq == SEARCH_TITLE_SEQ, if_absent=if_absent)
    # SQLite's document holds the owned words too; PostgreSQL's index derives them (0005).
    document = words if postgres else fulltext.owned_document(words, user_id)
    parameters = {
        "index_session_id": session_id,
        "index_user_id": user_id,
        "index_seq": seq,
        "index_document": document,
    }
    await conn.execute(stmt, parameters)


@functools.cache
def _insert(*, postgres: bool, title: bool, if_absent: bool) -> Insert:
    """`index_text`'s INSERT, built once per shape (per message, building it was a good part
    of an import's time, docs/performance.md). Its parameters are named apart from the columns:
    an INSERT reads execute-time keys that name columns as values to write."""
    document: Any
    if postgres:
        document = func.to_tsvector(
            literal_column("'simple'::regconfig"), bindparam("index_document", type_=String())
        )
        if title:
            # Weight A against the default D: a match in the title ranks above one in a message.
            document = func.setweight(document, literal_column("'A'"))
    else:
        document = bindparam("index_document", type_=chat_search.c.document.type)
    dialect_insert = postgresql.insert if postgres else sqlite.insert
    stmt = dialect_insert(chat_search).values(
        session_id=bindparam("index_session_id", type_=chat_search.c.session_id.type),
        user_id=bindparam("index_user_id", type_=chat_search.c.user_id.type),
        seq=bindparam("index_seq", type_=chat_search.c.seq.type),
        document=document,
    )
    if if_absent:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[chat_search.c.session_id, chat_search.c.seq]
        )
    return stmt


async def index_message(
    conn: AsyncConnection, session_id: str, user_id: str | None, seq: int, text: str
) -> None:
    """Add a message that was stored without its text (a reply finished later) to the index."""
    await index_text(conn, session_id, user_id, seq, text)


async def replace_title(
    conn: AsyncConnection, session_id: str, user_id: str | None, title: str
) -> None:
    """Replace a session's title entry (a title chosen by the user, or written by a model)."""
    await conn.execute(
        delete(chat_search).where(
            chat_search.c.session_id == session_id, chat_search.c.seq == SEARCH_TITLE_SEQ
        )
    )
    await index_text(conn, session_id, user_id, SEARCH_TITLE_SEQ, title)
