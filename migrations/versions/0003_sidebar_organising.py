"""The sidebar at scale: pinned sessions, and keyset-friendly indexes.

Listing orders by (pinned DESC, updated_at DESC, id DESC), per user and per archive state
(`active`), so the indexes lead with the filters and end with the full sort key: a page at
any depth is an index range scan. They replace the seed's two indexes, which they cover.

Revision ID: 0003_sidebar_organising
Revises: 0002_session_metadata
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_sidebar_organising"
down_revision: str | None = "0002_session_metadata"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SORT_KEY = [sa.text("pinned DESC"), sa.text("updated_at DESC"), sa.text("id DESC")]


def upgrade() -> None:
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(
            sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.drop_index("idx_chat_sessions_user_id_updated", table_name="chat_sessions")
    op.drop_index("idx_chat_sessions_updated_at", table_name="chat_sessions")
    op.create_index(
        "idx_chat_sessions_user_list", "chat_sessions", ["user_id", "active", *_SORT_KEY]
    )
    op.create_index("idx_chat_sessions_list", "chat_sessions", ["active", *_SORT_KEY])


def downgrade() -> None:
    op.drop_index("idx_chat_sessions_list", table_name="chat_sessions")
    op.drop_index("idx_chat_sessions_user_list", table_name="chat_sessions")
    # Before the indexes: on SQLite this rebuilds the table and recreates its indexes from
    # reflection, which loses DESC.
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("pinned")
    op.create_index("idx_chat_sessions_updated_at", "chat_sessions", [sa.text("updated_at DESC")])
    op.create_index(
        "idx_chat_sessions_user_id_updated",
        "chat_sessions",
        ["user_id", sa.text("updated_at DESC")],
        postgresql_where=sa.text("user_id IS NOT NULL"),
        sqlite_where=sa.text("user_id IS NOT NULL"),
    )
