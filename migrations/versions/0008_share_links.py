"""Read-only share links: `chat_shares` and the snapshot's messages, `chat_share_messages`.

A link is a copy of a session's current branch at the moment it was shared (role, text and
time of each message; no ids), so later messages, other branches and renames never show
through it. Revoking deletes the link's row; deleting its session deletes its links (foreign
keys with ON DELETE CASCADE, which SQLite enforces with `PRAGMA foreign_keys=ON`, set on every
connection by app/kit/db/engine.py).

Both tables are new and start empty. Downgrade drops them, and with them every link.

Revision ID: 0008_share_links
Revises: 0007_message_tree
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_share_links"
down_revision: str | None = "0007_message_tree"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_shares",
        sa.Column("share_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("share_id", name=op.f("pk_chat_shares")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.session_id"],
            name=op.f("fk_chat_shares_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("idx_chat_shares_user_created", "chat_shares", ["user_id", "created_at"])
    op.create_index("idx_chat_shares_session", "chat_shares", ["session_id"])
    op.create_table(
        "chat_share_messages",
        sa.Column("share_id", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("share_id", "position", name=op.f("pk_chat_share_messages")),
        sa.ForeignKeyConstraint(
            ["share_id"],
            ["chat_shares.share_id"],
            name=op.f("fk_chat_share_messages_share_id_chat_shares"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "role IN ('user', 'assistant', 'system')", name=op.f("ck_chat_share_messages_role")
        ),
    )


def downgrade() -> None:
    op.drop_table("chat_share_messages")
    op.drop_index("idx_chat_shares_session", table_name="chat_shares")
    op.drop_index("idx_chat_shares_user_created", table_name="chat_shares")
    op.drop_table("chat_shares")
