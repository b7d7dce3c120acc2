"""Folders and tags: `chat_folders`, `chat_tags`, `chat_session_tags`, and the session's folder.

Folders nest, and a name is unique among its siblings ignoring case: a unique key on (owner,
parent's id or "" at the top, case-folded name), plain columns that both databases compare
alike. Tags are per user, unique by case-folded name; `chat_session_tags` links sessions to
them and goes with either by cascade. `chat_sessions.folder_id` is new and null (no session is
in a folder yet), with its own sidebar index: one folder's page is a range of it.

Downgrade drops the tables and the column, and with them every folder and tag.

Revision ID: 0012_folders_tags
Revises: 0011_reply_stop_requests
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_folders_tags"
down_revision: str | None = "0011_reply_stop_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SORT_KEY = [sa.text("pinned DESC"), sa.text("updated_at DESC"), sa.text("id DESC")]
_FOLDER_FK = "fk_chat_sessions_folder_id_chat_folders"


def upgrade() -> None:
    op.create_table(
        "chat_folders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("parent_key", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_folders")),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["chat_folders.id"], name=op.f("fk_chat_folders_parent_id_chat_folders")
        ),
        sa.UniqueConstraint(
            "user_id", "parent_key", "name_key", name=op.f("uq_chat_folders_sibling_name")
        ),
    )
    op.create_index("idx_chat_folders_parent", "chat_folders", ["parent_id"])
    op.create_table(
        "chat_tags",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_tags")),
        sa.UniqueConstraint("user_id", "name_key", name=op.f("uq_chat_tags_user_name")),
    )
    op.create_table(
        "chat_session_tags",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("tag_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "tag_id", name=op.f("pk_chat_session_tags")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.session_id"],
            name=op.f("fk_chat_session_tags_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"],
            ["chat_tags.id"],
            name=op.f("fk_chat_session_tags_tag_id_chat_tags"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("idx_chat_session_tags_tag", "chat_session_tags", ["tag_id", "session_id"])
    # A plain ADD COLUMN on both databases, so chat_sessions is not rebuilt: SQLite accepts a
    # REFERENCES clause on a column added with a null default (Alembic does not write one).
    if op.get_context().dialect.name == "sqlite":
        op.execute(
            f"ALTER TABLE chat_sessions ADD COLUMN folder_id CHAR(32) CONSTRAINT {_FOLDER_FK}"
            " REFERENCES chat_folders (id)"
        )
    else:
        op.add_column("chat_sessions", sa.Column("folder_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(_FOLDER_FK, "chat_sessions", "chat_folders", ["folder_id"], ["id"])
    op.create_index(
        "idx_chat_sessions_user_folder_list",
        "chat_sessions",
        ["user_id", "active", "folder_id", *_SORT_KEY],
    )


def downgrade() -> None:
    op.drop_index("idx_chat_sessions_user_folder_list", table_name="chat_sessions")
    if op.get_context().dialect.name == "sqlite":
        # SQLite cannot drop a column that a foreign key uses: the table is rebuilt, which
        # recreates its indexes from reflection and loses DESC, so they are dropped first
        # and created again after.
        op.drop_index("idx_chat_sessions_user_list", table_name="chat_sessions")
        op.drop_index("idx_chat_sessions_list", table_name="chat_sessions")
        with op.batch_alter_table("chat_sessions", recreate="always") as batch:
            batch.drop_column("folder_id")
        op.create_index(
            "idx_chat_sessions_user_list", "chat_sessions", ["user_id", "active", *_SORT_KEY]
        )
        op.create_index("idx_chat_sessions_list", "chat_sessions", ["active", *_SORT_KEY])
    else:
        op.drop_constraint(_FOLDER_FK, "chat_sessions", type_="foreignkey")
        op.drop_column("chat_sessions", "folder_id")
    op.drop_index("idx_chat_session_tags_tag", table_name="chat_session_tags")
    op.drop_table("chat_session_tags")
    op.drop_table("chat_tags")
    op.drop_index("idx_chat_folders_parent", table_name="chat_folders")
    op.drop_table("chat_folders")
