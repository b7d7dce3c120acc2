"""Session metadata for the sidebar: title, last_message, message_count, and their indexes.

Existing sessions are backfilled from their messages with the same rules the write path uses.

Revision ID: 0002_session_metadata
Revises: 0001_base_schema
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The write path's shortening rules; the backfill must produce what the service would have.
from app.kit.text import make_preview, make_title

revision: str = "0002_session_metadata"
down_revision: str | None = "0001_base_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL_BATCH = 1_000

sessions = sa.table(
    "chat_sessions",
    sa.column("session_id", sa.Text()),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("title", sa.Text()),
    sa.column("last_message", sa.Text()),
    sa.column("message_count", sa.Integer()),
)
messages = sa.table(
    "chat_messages",
    sa.column("session_id", sa.Text()),
    sa.column("seq", sa.Integer()),
    sa.column("role", sa.Text()),
    sa.column("content", sa.Text()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("title", sa.Text(), nullable=True))
        batch.add_column(sa.Column("last_message", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("message_count", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index("idx_chat_sessions_updated_at", "chat_sessions", [sa.text("updated_at DESC")])
    op.create_index(
        "idx_chat_sessions_user_id_updated",
        "chat_sessions",
        ["user_id", sa.text("updated_at DESC")],
        postgresql_where=sa.text("user_id IS NOT NULL"),
        sqlite_where=sa.text("user_id IS NOT NULL"),
    )
    _backfill_counts()
    if op.get_context().as_sql:
        _backfill_texts_in_sql()
    else:
        _backfill_texts()


def _backfill_counts() -> None:
    """Message counts and last-activity times, in one statement."""
    of_session = messages.c.session_id == sessions.c.session_id
    last_activity = sa.select(sa.func.max(messages.c.created_at)).where(of_session)
    op.execute(
        sessions.update().values(
            message_count=sa.select(sa.func.count()).where(of_session).scalar_subquery(),
            updated_at=sa.case(
                (
                    last_activity.scalar_subquery() > sessions.c.updated_at,
                    last_activity.scalar_subquery(),
                ),
                else_=sessions.c.updated_at,
            ),
        )
    )


def _backfill_texts() -> None:
    """Titles and previews in batches: they need the write path's Unicode-aware shortening,
    which SQL cannot do the same way on both databases."""
    connection = op.get_bind()
    after = ""
    while True:
        batch = list(
            connection.execute(
                sa.select(sessions.c.session_id)
                .where(sessions.c.session_id > after, sessions.c.message_count > 0)
                .order_by(sessions.c.session_id)
                .limit(_BACKFILL_BATCH)
            ).scalars()
        )
        if not batch:
            return
        after = batch[-1]
        updates = _metadata_for(connection, batch)
        connection.execute(
            sessions.update()
            .where(sessions.c.session_id == sa.bindparam("sid"))
            .values(title=sa.bindparam("new_title"), last_message=sa.bindparam("new_last")),
            updates,
        )


def _metadata_for(connection: sa.Connection, session_ids: list[str]) -> list[dict[str, object]]:
    first_user_seq = (
        sa.select(messages.c.session_id, sa.func.min(messages.c.seq).label("seq"))
        .where(messages.c.session_id.in_(session_ids), messages.c.role == "user")
        .group_by(messages.c.session_id)
        .subquery()
    )
    last_seq = (
        sa.select(messages.c.session_id, sa.func.max(messages.c.seq).label("seq"))
        .where(messages.c.session_id.in_(session_ids))
        .group_by(messages.c.session_id)
        .subquery()
    )

    def contents(positions: sa.Subquery) -> dict[str, str]:
        rows = connection.execute(
            sa.select(messages.c.session_id, messages.c.content).join(
                positions,
                sa.and_(
                    messages.c.session_id == positions.c.session_id,
                    messages.c.seq == positions.c.seq,
                ),
            )
        )
        return {row.session_id: row.content for row in rows}

    titles = contents(first_user_seq)
    lasts = contents(last_seq)
    return [
        {
            "sid": session_id,
            "new_title": make_title(titles[session_id]) if session_id in titles else None,
            "new_last": make_preview(lasts[session_id]),
        }
        for session_id in session_ids
    ]


# The characters the write path's `\s` matches (Unicode White_Space), as a PostgreSQL regex:
# PostgreSQL's own `\s` depends on the locale and misses e.g. U+00A0 under C.UTF-8.
_PG_WHITESPACE_RUN = r"[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"


def _backfill_texts_in_sql() -> None:
    """For `alembic upgrade --sql` (PostgreSQL only): the same rules, except that a cut may
    fall inside a grapheme cluster, since plain SQL has no notion of one."""
    collapsed = f"btrim(regexp_replace(m.content, '{_PG_WHITESPACE_RUN}', ' ', 'g'))"
    op.execute(
        f"""
        UPDATE chat_sessions AS s SET
          title = (
            SELECT CASE WHEN length(t) > 50 THEN rtrim(left(t, 47)) || '...' ELSE t END
            FROM (SELECT {collapsed} AS t
                  FROM chat_messages m WHERE m.session_id = s.session_id AND m.role = 'user'
                  ORDER BY m.seq LIMIT 1) AS first_user),
          last_message = (
            SELECT CASE WHEN length(t) > 100 THEN rtrim(left(t, 97)) || '...' ELSE t END
            FROM (SELECT {collapsed} AS t
                  FROM chat_messages m WHERE m.session_id = s.session_id
                  ORDER BY m.seq DESC LIMIT 1) AS last)
        WHERE s.message_count > 0
        """
    )


def downgrade() -> None:
    op.drop_index("idx_chat_sessions_user_id_updated", table_name="chat_sessions")
    op.drop_index("idx_chat_sessions_updated_at", table_name="chat_sessions")
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("message_count")
        batch.drop_column("last_message")
        batch.drop_column("title")
