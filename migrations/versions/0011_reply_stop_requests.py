"""A stop asked of a reply that another process generates.

`chat_replies_generating` gains `stop_requested_at`: a stop that reaches a process that does not
generate the reply marks its row, and the process that does stops it when it next saves the
reply's text or reports its heartbeat (app/replies/relay.py). The column starts empty.

Revision ID: 0011_reply_stop_requests
Revises: 0010_title_source
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_reply_stop_requests"
down_revision: str | None = "0010_title_source"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "chat_replies_generating",
        sa.Column("stop_requested_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("chat_replies_generating") as batch:
        batch.drop_column("stop_requested_at")
