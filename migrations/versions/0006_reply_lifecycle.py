"""Replies stored while they are generated, and the processes that generate them.

`chat_processes`: each running process of the service, with a heartbeat. `chat_replies_generating`:
which process is generating which assistant message (a message stored when its generation
starts, with status "generating" in its metadata). A reply whose process stopped reporting is
finished as interrupted by another process, or by the next one to start (app/replies/liveness.py).

Both tables are new and start empty: existing messages are all finished already.

Revision ID: 0006_reply_lifecycle
Revises: 0005_search_owned_words
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_reply_lifecycle"
down_revision: str | None = "0005_search_owned_words"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_processes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_processes")),
    )
    op.create_table(
        "chat_replies_generating",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("process_id", sa.Uuid(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_chat_replies_generating")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["chat_messages.id"],
            name=op.f("fk_chat_replies_generating_message_id_chat_messages"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "idx_chat_replies_generating_process", "chat_replies_generating", ["process_id"]
    )


# Replies still generating when the schema goes back: finished as interrupted, as a sweep
# would have done, so that the older code never meets the "generating" status.
_FINISH_INTERRUPTED = {
    "postgresql": """
        UPDATE chat_messages SET metadata = metadata || jsonb_build_object(
            'status', CASE WHEN content = '' THEN 'failed' ELSE 'incomplete' END,
            'finish_reason', 'error', 'error', 'interrupted')
        WHERE id IN (SELECT message_id FROM chat_replies_generating)
    """,
    "sqlite": """
        UPDATE chat_messages SET metadata = json_set(metadata,
            '$.status', CASE WHEN content = '' THEN 'failed' ELSE 'incomplete' END,
            '$.finish_reason', 'error', '$.error', 'interrupted')
        WHERE id IN (SELECT message_id FROM chat_replies_generating)
    """,
}


def downgrade() -> None:
    op.execute(_FINISH_INTERRUPTED[op.get_context().dialect.name])
    op.drop_index("idx_chat_replies_generating_process", table_name="chat_replies_generating")
    op.drop_table("chat_replies_generating")
    op.drop_table("chat_processes")
