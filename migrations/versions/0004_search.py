"""Search over titles and message text: the chat_search index and its backfill.

One entry per session title (seq 0) and per message with words in it. On PostgreSQL an entry's
document is a tsvector under a GIN index; on SQLite it is text, indexed by an FTS5 table that
triggers keep in step with chat_search. FTS5 refers to entries by chat_search.id, an INTEGER
PRIMARY KEY, which VACUUM never renumbers (it may renumber the implicit rowids of the UUID-keyed
tables, which is why they are not indexed directly).

Existing titles and messages are indexed here, split into words by the write path's own rules
(app/search/legacy.py, the rules of the time; 0015 reindexes with today's). `alembic upgrade
--sql` approximates those rules in SQL.

Revision ID: 0004_search
Revises: 0003_sidebar_organising
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The write path's rules: the backfill must index exactly what the service would have.
from app.search.fulltext import DOCUMENT_MAX_CHARS, FTS_TABLE
from app.search.legacy import FTS_USER_ID_CHARS, document

revision: str = "0004_search"
down_revision: str | None = "0003_sidebar_organising"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL_BATCH = 2_000

sessions = sa.table(
    "chat_sessions",
    sa.column("session_id", sa.Text()),
    sa.column("user_id", sa.Text()),
    sa.column("title", sa.Text()),
)
messages = sa.table(
    "chat_messages",
    sa.column("session_id", sa.Text()),
    sa.column("seq", sa.Integer()),
    sa.column("content", sa.Text()),
)


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    op.create_table(
        "chat_search",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "session_id",
            sa.Text(),
            sa.ForeignKey(
                "chat_sessions.session_id",
                name="fk_chat_search_session_id_chat_sessions",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column(
            "document",
            postgresql.TSVECTOR() if postgres else sa.Text(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_chat_search"),
        sa.UniqueConstraint("session_id", "seq", name="uq_chat_search_session_seq"),
    )
    if op.get_context().as_sql:
        _backfill_in_sql()
    else:
        _backfill(postgres)
    # After the backfill: building an index once is faster than growing it row by row.
    op.create_index("idx_chat_search_user", "chat_search", ["user_id"])
    if postgres:
        op.create_index(
            "idx_chat_search_document",
            "chat_search",
            ["document"],
            postgresql_using="gin",
        )
    else:
        _create_sqlite_index()


def _create_sqlite_index() -> None:
    # Marks (`M*`) are word characters, as in app/search/fulltext.py: by default unicode61 splits
    # words at every combining mark, so Devanagari, Thai, or pointed Arabic and Hebrew would
    # be indexed syllable by syllable, and a query would match inside words.
    op.execute(
        f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
        "document, user_id, content='chat_search', content_rowid='id', "
        "tokenize=\"unicode61 remove_diacritics 0 categories 'L* N* Co M*' "
        f"tokenchars '{FTS_USER_ID_CHARS}'\")"
    )
    op.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
    # FTS5's documented external-content triggers. Deletes cascading from chat_sessions fire
    # them too, so the write path only ever touches chat_search.
    delete_old = (
        f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, document, user_id) "
        "VALUES ('delete', old.id, old.document, old.user_id);"
    )
    insert_new = (
        f"INSERT INTO {FTS_TABLE}(rowid, document, user_id) "
        "VALUES (new.id, new.document, new.user_id);"
    )
    op.execute(f"CREATE TRIGGER chat_search_ai AFTER INSERT ON chat_search BEGIN {insert_new} END")
    op.execute(f"CREATE TRIGGER chat_search_ad AFTER DELETE ON chat_search BEGIN {delete_old} END")
    op.execute(
        "CREATE TRIGGER chat_search_au AFTER UPDATE ON chat_search "
        f"BEGIN {delete_old} {insert_new} END"
    )


def _backfill(postgres: bool) -> None:
    """Titles, then messages, in batches in key order."""
    connection = op.get_bind()
    entries = sa.table(
        "chat_search",
        sa.column("session_id", sa.Text()),
        sa.column("user_id", sa.Text()),
        sa.column("seq", sa.Integer()),
        sa.column("document", sa.Text()),
    )
    if postgres:
        simple: Any = sa.literal_column("'simple'::regconfig")
        as_tsvector = sa.func.to_tsvector(simple, sa.bindparam("doc"))
        title_document: Any = sa.func.setweight(as_tsvector, sa.literal_column("'A'"))
        message_document: Any = as_tsvector
    else:
        title_document = message_document = sa.bindparam("doc")

    def insert(rows: list[dict[str, Any]], document_value: Any) -> None:
        rows = [row for row in rows if row["doc"]]
        if rows:
            connection.execute(
                entries.insert().values(
                    session_id=sa.bindparam("sid"),
                    user_id=sa.bindparam("uid"),
                    seq=sa.bindparam("position"),
                    document=document_value,
                ),
                rows,
            )

    after = ""
    while True:
        batch = connection.execute(
            sa.select(sessions.c.session_id, sessions.c.user_id, sessions.c.title)
            .where(sessions.c.session_id > after, sessions.c.title.is_not(None))
            .order_by(sessions.c.session_id)
            .limit(_BACKFILL_BATCH)
        ).all()
        if not batch:
            break
        after = batch[-1].session_id
        insert(
            [
                {
                    "sid": row.session_id,
                    "uid": row.user_id,
                    "position": 0,
                    "doc": document(row.title),
                }
                for row in batch
            ],
            title_document,
        )

    position: tuple[str, int] = ("", 0)
    while True:
        rows = connection.execute(
            sa.select(messages.c.session_id, messages.c.seq, messages.c.content, sessions.c.user_id)
            .join(sessions, sessions.c.session_id == messages.c.session_id)
            .where(sa.tuple_(messages.c.session_id, messages.c.seq) > sa.tuple_(*position))
            .order_by(messages.c.session_id, messages.c.seq)
            .limit(_BACKFILL_BATCH)
        ).all()
        if not rows:
            break
        position = (rows[-1].session_id, rows[-1].seq)
        insert(
            [
                {
                    "sid": row.session_id,
                    "uid": row.user_id,
                    "position": row.seq,
                    "doc": document(row.content),
                }
                for row in rows
            ],
            message_document,
        )


def _backfill_in_sql() -> None:
    """For `alembic upgrade --sql` (PostgreSQL only): words as runs of letters and digits, by
    the database's locale rather than Unicode's tables, uncapped in length. Exact on ASCII text;
    elsewhere close, and any difference only affects what an old message matches."""
    words = "btrim(regexp_replace(lower(normalize({column}, NFKC)), '[^[:alnum:]]+', ' ', 'g'))"
    as_tsvector = f"to_tsvector('simple'::regconfig, left({words}, {DOCUMENT_MAX_CHARS}))"
    op.execute(
        "INSERT INTO chat_search (session_id, user_id, seq, document) "
        f"SELECT session_id, user_id, 0, setweight({as_tsvector.format(column='title')}, 'A') "
        f"FROM chat_sessions WHERE {words.format(column='title')} <> ''"
    )
    op.execute(
        "INSERT INTO chat_search (session_id, user_id, seq, document) "
        f"SELECT m.session_id, s.user_id, m.seq, {as_tsvector.format(column='m.content')} "
        "FROM chat_messages m JOIN chat_sessions s ON s.session_id = m.session_id "
        f"WHERE {words.format(column='m.content')} <> ''"
    )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for trigger in ("chat_search_ai", "chat_search_ad", "chat_search_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    else:
        op.drop_index("idx_chat_search_document", table_name="chat_search")
    op.drop_index("idx_chat_search_user", table_name="chat_search")
    op.drop_table("chat_search")
