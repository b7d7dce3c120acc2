"""Imports: `chat_imports` (each upload's progress and outcome) and `chat_import_sources`
(which conversation of an export each imported session came from, per owner).

At most one running import per owner: a unique index over `owner_key` of the running rows
(partial, on both databases). Downgrade drops both tables; imported sessions stay, as
ordinary sessions.

Revision ID: 0014_imports
Revises: 0012_folders_tags
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014_imports"
down_revision: str | None = "0013_user_id_everywhere"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "chat_imports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("owner_key", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("imported", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", JSON_DOCUMENT, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("process_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_imports")),
        sa.CheckConstraint(
            "status IN ('running', 'done', 'failed')", name=op.f("ck_chat_imports_status")
        ),
    )
    op.create_index(
        "uq_chat_imports_running",
        "chat_imports",
        ["owner_key"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index("idx_chat_imports_process", "chat_imports", ["process_id", "status"])
    op.create_table(
        "chat_import_sources",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "source_id", name=op.f("pk_chat_import_sources")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.session_id"],
            name=op.f("fk_chat_import_sources_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("idx_chat_import_sources_session", "chat_import_sources", ["session_id"])


def downgrade() -> None:
    op.drop_index("idx_chat_import_sources_session", table_name="chat_import_sources")
    op.drop_table("chat_import_sources")
    op.drop_index("idx_chat_imports_process", table_name="chat_imports")
    op.drop_index("uq_chat_imports_running", table_name="chat_imports")
    op.drop_table("chat_imports")
