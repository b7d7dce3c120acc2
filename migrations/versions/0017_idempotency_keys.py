"""Idempotency keys: `chat_idempotency_keys`, the requests that started a reply under an
`Idempotency-Key` header (app/idempotency), so that a request sent again stores nothing twice.

One row per owner and key (the primary key), going with its session (cascade); an index on
`created_at` for the sweep that deletes expired keys. Downgrade drops the table: requests sent
again after it store their message again, as they did before.

Revision ID: 0017_idempotency_keys
Revises: 0016_search_ranking_window
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_idempotency_keys"
down_revision: str | None = "0016_search_ranking_window"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_idempotency_keys",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("question_id", sa.Uuid(), nullable=False),
        sa.Column("reply_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_chat_idempotency_keys")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.session_id"],
            name=op.f("fk_chat_idempotency_keys_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("idx_chat_idempotency_keys_session", "chat_idempotency_keys", ["session_id"])
    op.create_index("idx_chat_idempotency_keys_created", "chat_idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("idx_chat_idempotency_keys_created", table_name="chat_idempotency_keys")
    op.drop_index("idx_chat_idempotency_keys_session", table_name="chat_idempotency_keys")
    op.drop_table("chat_idempotency_keys")
