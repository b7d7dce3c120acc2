"""Base schema: chat sessions and their messages, before session metadata.

Revision ID: 0001_base_schema
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_base_schema"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _uuid_id() -> "sa.Column[Any]":
    # PostgreSQL (13+) generates ids for rows inserted by hand, as the seed's schema did.
    server_default = (
        sa.text("gen_random_uuid()") if op.get_context().dialect.name == "postgresql" else None
    )
    return sa.Column("id", sa.Uuid(), nullable=False, server_default=server_default)


def upgrade() -> None:
    op.create_table(
        "chat_sessions",
        _uuid_id(),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("metadata", JSON_DOCUMENT, nullable=False, server_default=sa.text("'{}'")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_chat_sessions_session_id")),
    )
    op.create_table(
        "chat_messages",
        _uuid_id(),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("metadata", JSON_DOCUMENT, nullable=False, server_default=sa.text("'{}'")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.session_id"],
            name=op.f("fk_chat_messages_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("session_id", "seq", name=op.f("uq_chat_messages_session_seq")),
        sa.CheckConstraint(
            "role IN ('user', 'assistant', 'system')", name=op.f("ck_chat_messages_role")
        ),
    )


def downgrade() -> None:
    op.drop_table("chat_messages")
    op.drop_table("chat_sessions")
