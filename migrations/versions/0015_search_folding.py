"""Search in every language: every entry reindexed with folded words and pairs of characters.

The words of every title and message are computed again by app/search/fulltext.py: folded
(compatibility forms, case, accents: `cafe` finds `café`), runs of Chinese, Japanese, Thai
and other scripts written without spaces indexed as overlapping pairs of characters. On
SQLite each entry's document also holds its words under its owner's key, so that one user's
search reads only that user's entries, as on PostgreSQL since 0005; its FTS5 table indexes
`document` alone (`_` a token character, for the key), no longer `user_id`.

PostgreSQL: no DDL (the GIN indexes and 0005's owned words follow the documents). The entries
are rewritten in batches of `_BATCH` by key, each committed on a connection of its own, so a
write waits at most for one batch's rows (those being rewritten); the migration's own
transaction holds the migration lock meanwhile, then rewrites the entries added since it
started (a service still running the old code keeps writing the old words), the last of them
with writes to chat_search held off (a SHARE lock, until the revision is recorded: the time
to rewrite the few entries written during the previous step). Old and new words coexist
meanwhile: a search misses only what is not rewritten yet.
`alembic upgrade --sql` approximates the new words in SQL (folding, no pairs). SQLite: a plain
rebuild, in the migration's transaction.

Downgrade rewrites every entry with the words of 0004 (app/search/legacy.py) the same way,
and restores SQLite's FTS5 table of 0004.

Revision ID: 0015_search_folding
Revises: 0014_imports
Create Date: 2026-12-07
"""

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from app.kit.db.migrate import committed_high_water
from app.search import fulltext, legacy

revision: str = "0015_search_folding"
down_revision: str | None = "0014_imports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Entries rewritten per transaction: a batch's rows are locked until it commits (tens of
# milliseconds), and each commit also flushes the GIN indexes' pending entries in small steps.
_BATCH = 2_000
_TITLE_SEQ = 0
_FTS_TRIGGERS = ("chat_search_ai", "chat_search_ad", "chat_search_au")

_entries = sa.table(
    "chat_search",
    sa.column("id", sa.BigInteger()),
    sa.column("session_id", sa.Text()),
    sa.column("user_id", sa.Text()),
    sa.column("seq", sa.Integer()),
    sa.column("document", sa.Text()),
)
_sessions = sa.table(
    "chat_sessions", sa.column("session_id", sa.Text()), sa.column("title", sa.Text())
)
_messages = sa.table(
    "chat_messages",
    sa.column("session_id", sa.Text()),
    sa.column("ordinal", sa.Integer()),
    sa.column("content", sa.Text()),
)

_LOCKED_HERE = sa.text(
    "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' "
    "AND relation IN (to_regclass('chat_search'), to_regclass('chat_sessions'), "
    "to_regclass('chat_messages')) "
    "AND mode NOT IN ('AccessShareLock', 'RowShareLock', 'RowExclusiveLock')"
)

# (user_id, text) -> the document to store: the text's words as a migration direction wants.
Rewrite = Callable[[str | None, str], str]


def _new_sqlite(user_id: str | None, text: str) -> str:
    return fulltext.owned_document(fulltext.document(text), user_id)


def _new_postgres(_user_id: str | None, text: str) -> str:
    return fulltext.document(text)


def _old(_user_id: str | None, text: str) -> str:
    return legacy.document(text)


def _rewrite_batch(connection: Connection, after: int, up_to: int | None, words: Rewrite) -> int:
    """Rewrites the entries after `after` (and up to `up_to`), at most _BATCH of them, each
    from its title or message; returns the last id read, or -1 when none was left."""
    text = sa.case(
        (_entries.c.seq == _TITLE_SEQ, _sessions.c.title),
        else_=_messages.c.content,
    )
    stmt = (
        sa.select(_entries.c.id, _entries.c.user_id, _entries.c.seq, text.label("text"))
        .join(_sessions, _sessions.c.session_id == _entries.c.session_id)
        .outerjoin(
            _messages,
            sa.and_(
                _messages.c.session_id == _entries.c.session_id,
                _messages.c.ordinal == _entries.c.seq,
            ),
        )
        .where(_entries.c.id > after)
        .order_by(_entries.c.id)
        .limit(_BATCH)
    )
    if up_to is not None:
        stmt = stmt.where(_entries.c.id <= up_to)
    rows = connection.execute(stmt).all()
    if not rows:
        return -1
    postgres = connection.dialect.name == "postgresql"
    updates: list[dict[str, Any]] = []
    gone: list[int] = []
    for row in rows:
        document = words(row.user_id, row.text or "")
        if document:
            updates.append({"entry": row.id, "doc": document, "title": row.seq == _TITLE_SEQ})
        else:
            gone.append(row.id)
    if updates:
        value: Any = sa.bindparam("doc")
        if postgres:
            vector = sa.func.to_tsvector(sa.literal_column("'simple'::regconfig"), value)
            # Titles rank above messages (weight A), as the write path stores them.
            value = sa.case(
                (
                    sa.bindparam("title", type_=sa.Boolean()),
                    sa.func.setweight(vector, sa.literal_column("'A'")),
                ),
                else_=vector,
            )
        connection.execute(
            _entries.update().where(_entries.c.id == sa.bindparam("entry")).values(document=value),
            updates,
        )
    if gone:
        connection.execute(_entries.delete().where(_entries.c.id.in_(gone)))
    return int(rows[-1].id)


def _rewrite_all(connection: Connection, words: Rewrite) -> None:
    after = 0
    while after != -1:
        after = _rewrite_batch(connection, after, None, words)


def _rewrite_postgres(words: Rewrite) -> None:
    """Batches committed on a connection of their own, up to the newest entry at the start;
    then, in the migration's transaction, the entries added since (see the module's text)."""
    connection = op.get_bind()
    own = connection.execute(sa.text("SELECT CAST(pg_current_xact_id() AS text)")).scalar_one()
    # Tables created or altered earlier in this run are this transaction's alone (invisible,
    # or locked): then it rewrites everything itself.
    if connection.execute(_LOCKED_HERE).scalar_one():
        _rewrite_all(connection, words)
        return
    with connection.engine.connect() as batches:
        # An entry up to `high_water` not committed yet would belong to a transaction of this
        # database running now: a batch must not pass it before it is committed.
        high_water = committed_high_water(batches, "chat_search", own_xid=own)
        after = 0
        while after != -1:
            with batches.begin():
                after = _rewrite_batch(batches, after, high_water, words)
    # The entries added meanwhile, then (writers held off until this commits) the last few.
    last = high_water
    for lock in (False, True):
        if lock:
            connection.execute(sa.text("LOCK TABLE chat_search IN SHARE MODE"))
        while (after := _rewrite_batch(connection, last, None, words)) != -1:
            last = after


def _rewrite_in_sql() -> None:
    """For `alembic upgrade --sql` (PostgreSQL only): 0004's approximation of the words, with
    case and accents folded; runs of scripts written without spaces are not paired, so they
    stay found by their start until the migration is run online."""
    words = (
        "btrim(regexp_replace(regexp_replace(normalize(lower({column}), NFKD), "
        "'[\\u0300-\\u036f]', '', 'g'), '[^[:alnum:]]+', ' ', 'g'))"
    )
    vector = f"to_tsvector('simple'::regconfig, left({words}, {fulltext.DOCUMENT_MAX_CHARS}))"
    op.execute(
        f"UPDATE chat_search e SET document = setweight({vector.format(column='s.title')}, 'A') "
        f"FROM chat_sessions s WHERE e.seq = 0 AND s.session_id = e.session_id"
    )
    op.execute(
        f"UPDATE chat_search e SET document = {vector.format(column='m.content')} "
        "FROM chat_messages m WHERE e.seq <> 0 AND m.session_id = e.session_id "
        "AND m.ordinal = e.seq"
    )


def _drop_sqlite_index() -> None:
    for trigger in _FTS_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute(f"DROP TABLE IF EXISTS {fulltext.FTS_TABLE}")


def _create_sqlite_index(columns: str, tokenchars: str) -> None:
    """The FTS5 table over chat_search's `columns`, filled, and the triggers that keep it in
    step (as 0004 made them). Marks (`M*`) are word characters, as in app/search/fulltext.py."""
    table = fulltext.FTS_TABLE
    op.execute(
        f"CREATE VIRTUAL TABLE {table} USING fts5("
        f"{columns}, content='chat_search', content_rowid='id', "
        "tokenize=\"unicode61 remove_diacritics 0 categories 'L* N* Co M*' "
        f"tokenchars '{tokenchars}'\")"
    )
    op.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
    names = [name.strip() for name in columns.split(",")]
    old_values = ", ".join(f"old.{name}" for name in names)
    new_values = ", ".join(f"new.{name}" for name in names)
    delete_old = (
        f"INSERT INTO {table}({table}, rowid, {columns}) VALUES ('delete', old.id, {old_values});"
    )
    insert_new = f"INSERT INTO {table}(rowid, {columns}) VALUES (new.id, {new_values});"
    op.execute(f"CREATE TRIGGER chat_search_ai AFTER INSERT ON chat_search BEGIN {insert_new} END")
    op.execute(f"CREATE TRIGGER chat_search_ad AFTER DELETE ON chat_search BEGIN {delete_old} END")
    op.execute(
        "CREATE TRIGGER chat_search_au AFTER UPDATE ON chat_search "
        f"BEGIN {delete_old} {insert_new} END"
    )


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name == "postgresql":
        if context.as_sql:
            _rewrite_in_sql()
        else:
            _rewrite_postgres(_new_postgres)
        return
    _drop_sqlite_index()
    _rewrite_all(op.get_bind(), _new_sqlite)
    # `_` joins the owner's key to a word (fulltext.owner_key).
    _create_sqlite_index("document", "_")


def downgrade() -> None:
    context = op.get_context()
    if context.dialect.name == "postgresql":
        if not context.as_sql:
            _rewrite_postgres(_old)
        return
    _drop_sqlite_index()
    _rewrite_all(op.get_bind(), _old)
    _create_sqlite_index("document, user_id", legacy.FTS_USER_ID_CHARS)
