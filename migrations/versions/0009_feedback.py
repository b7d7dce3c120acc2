"""Thumbs on replies: `chat_feedback`, one rating (and optional comment) per assistant message.

A new table that refers to the message (and its session) by key, with cascading deletes, and
never holds a copy of the conversation. It starts empty; downgrade drops it with its rows.

Revision ID: 0009_feedback
Revises: 0008_share_links
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_feedback"
down_revision: str | None = "0008_share_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_feedback",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("rating", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rating IN ('up', 'down')", name=op.f("ck_chat_feedback_rating")),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_chat_feedback")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["chat_messages.id"],
            name=op.f("fk_chat_feedback_message_id_chat_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.session_id"],
            name=op.f("fk_chat_feedback_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("idx_chat_feedback_updated", "chat_feedback", ["updated_at", "message_id"])
    op.create_index("idx_chat_feedback_session", "chat_feedback", ["session_id"])


def downgrade() -> None:
    op.drop_index("idx_chat_feedback_session", table_name="chat_feedback")
    op.drop_index("idx_chat_feedback_updated", table_name="chat_feedback")
    op.drop_table("chat_feedback")
