"""Who wrote a session's title: `chat_sessions.title_source`, "message" (the seed: the first
user message, cut), "model" or "user".

Existing titles were written by the seed or by a rename. A title that differs from what the
write path makes of the session's first user message (`make_title`) was chosen by the user:
it is backfilled as "user", in Python batches with the write path's `make_title`, so that a
model's title never replaces it. A rename to exactly the seed's title cannot be told from the
seed, and stays "message". Sessions without a title (no user message) stay "message".

Revision ID: 0010_title_source
Revises: 0009_feedback
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The write path's title rule; the backfill must compare with what the service would have made.
from app.kit.text import make_title

revision: str = "0010_title_source"
down_revision: str | None = "0009_feedback"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL_BATCH = 1_000

sessions = sa.table(
    "chat_sessions",
    sa.column("session_id", sa.Text()),
    sa.column("title", sa.Text()),
    sa.column("title_source", sa.Text()),
)
messages = sa.table(
    "chat_messages",
    sa.column("session_id", sa.Text()),
    sa.column("ordinal", sa.Integer()),
    sa.column("role", sa.Text()),
    sa.column("content", sa.Text()),
)

# One column, with its check, added in place on both databases: a batch rebuild of
# chat_sessions on SQLite would recreate its sidebar indexes without their DESC keys.
_ADD_COLUMN = (
    "ALTER TABLE chat_sessions ADD COLUMN title_source TEXT DEFAULT 'message' NOT NULL"
    " CONSTRAINT ck_chat_sessions_title_source"
    " CHECK (title_source IN ('message', 'model', 'user'))"
)


def upgrade() -> None:
    op.execute(_ADD_COLUMN)
    if op.get_context().as_sql:
        _backfill_in_sql()
    else:
        _backfill()


def _backfill() -> None:
    """'user' for each titled session whose title is not its first user message's, walking the
    sessions by id in batches."""
    connection = op.get_bind()
    after = ""
    first, user = messages.alias("first"), messages.alias("earlier")
    first_ordinal = (
        sa.select(sa.func.min(user.c.ordinal))
        .where(user.c.session_id == sessions.c.session_id, user.c.role == "user")
        .correlate(sessions)
        .scalar_subquery()
    )
    first_user_message = (
        sa.select(first.c.content)
        .where(first.c.session_id == sessions.c.session_id, first.c.ordinal == first_ordinal)
        .correlate(sessions)
        .scalar_subquery()
    )
    mark = (
        sessions.update()
        .where(sessions.c.session_id == sa.bindparam("renamed"))
        .values(title_source="user")
    )
    while True:
        rows = connection.execute(
            sa.select(sessions.c.session_id, sessions.c.title, first_user_message.label("first"))
            .where(sessions.c.session_id > after, sessions.c.title.is_not(None))
            .order_by(sessions.c.session_id)
            .limit(_BACKFILL_BATCH)
        ).all()
        if not rows:
            return
        after = rows[-1].session_id
        renamed = [
            {"renamed": row.session_id}
            for row in rows
            if row.first is None or make_title(row.first) != row.title
        ]
        if renamed:
            connection.execute(mark, renamed)


# The characters the write path's `\s` matches (Unicode White_Space), as a PostgreSQL regex
# (as in revision 0002).
_PG_WHITESPACE_RUN = r"[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"


def _backfill_in_sql() -> None:
    """For `alembic upgrade --sql` (PostgreSQL only): the first user message's title made as
    revision 0002's SQL backfill made it (a cut may fall inside a grapheme cluster), so a
    title that script wrote reads as the seed's here too."""
    collapsed = f"btrim(regexp_replace(m.content, '{_PG_WHITESPACE_RUN}', ' ', 'g'))"
    op.execute(
        f"""
        UPDATE chat_sessions AS s SET title_source = 'user'
        WHERE s.title IS NOT NULL AND s.title IS DISTINCT FROM (
          SELECT CASE WHEN t = '' THEN 'New chat'
                      WHEN length(t) > 50 THEN rtrim(left(t, 47)) || '...' ELSE t END
          FROM (SELECT {collapsed} AS t
                FROM chat_messages m WHERE m.session_id = s.session_id AND m.role = 'user'
                ORDER BY m.ordinal LIMIT 1) AS first_user)
        """
    )


_SORT_KEY = [sa.text("pinned DESC"), sa.text("updated_at DESC"), sa.text("id DESC")]


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        op.drop_column("chat_sessions", "title_source")
        return
    # SQLite drops a column in place only while its check is the column's own, as this
    # upgrade wrote it; a later downgrade that rebuilt the table (0012's) made it a table
    # check, which blocks that. So the table is rebuilt without both; a rebuild recreates the
    # indexes from reflection and loses DESC, so the sidebar's are dropped first and created
    # again after.
    op.drop_index("idx_chat_sessions_user_list", table_name="chat_sessions")
    op.drop_index("idx_chat_sessions_list", table_name="chat_sessions")
    with op.batch_alter_table("chat_sessions", recreate="always") as batch:
        batch.drop_constraint("title_source", type_="check")  # ck_chat_sessions_title_source
        batch.drop_column("title_source")
    op.create_index(
        "idx_chat_sessions_user_list", "chat_sessions", ["user_id", "active", *_SORT_KEY]
    )
    op.create_index("idx_chat_sessions_list", "chat_sessions", ["active", *_SORT_KEY])
