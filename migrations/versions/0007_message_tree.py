"""The message tree: each message has a parent; a session remembers its current branch.

`chat_messages` gains `parent_id` (null for a first message), `ordinal` (insertion order in the
session, which replaces `seq` as the unique key: siblings share a seq), `chosen_child_id` and
`branch_preview`; `chat_sessions` gains `current_leaf_id`, `chosen_root_id` and `node_count`.
`chat_search.seq` now holds a message's ordinal: on existing data ordinal = seq, so the index is
left as it is.

Existing sessions become single branches: each message's parent is the one before it, the
current leaf the last one, node_count the message count. `branch_preview` is what the write
path would have stored (the preview of the last message with text up to this one), computed in
Python batches with the write path's `make_preview`; the current leaf's is the session's
`last_message`, so that the sidebar shows the same text after a switch back to it.

Downgrade keeps each session's current branch (its seqs are 1..n already) and deletes the
messages off it, with their search entries: the older schema cannot hold a tree.

Revision ID: 0007_message_tree
Revises: 0006_reply_lifecycle
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The write path's shortening rules; the backfill must produce what the service would have.
from app.kit.text import make_preview

revision: str = "0007_message_tree"
down_revision: str | None = "0006_reply_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL_BATCH = 1_000

messages = sa.table(
    "chat_messages",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("seq", sa.Integer()),
    sa.column("content", sa.Text()),
    sa.column("branch_preview", sa.Text()),
)

# parent = the message before it; the current leaf = the last message.
_BACKFILL_TREE = (
    "UPDATE chat_messages SET ordinal = seq, parent_id = ("
    " SELECT p.id FROM chat_messages p"
    " WHERE p.session_id = chat_messages.session_id AND p.seq < chat_messages.seq"
    " ORDER BY p.seq DESC LIMIT 1)",
    "UPDATE chat_sessions SET"
    " current_leaf_id = (SELECT m.id FROM chat_messages m"
    "  WHERE m.session_id = chat_sessions.session_id ORDER BY m.seq DESC LIMIT 1),"
    " node_count = COALESCE((SELECT max(m.seq) FROM chat_messages m"
    "  WHERE m.session_id = chat_sessions.session_id), 0)",
)
_LEAF_PREVIEWS = (
    "UPDATE chat_messages SET branch_preview = (SELECT s.last_message FROM chat_sessions s"
    " WHERE s.current_leaf_id = chat_messages.id)"
    " WHERE id IN (SELECT current_leaf_id FROM chat_sessions)"
)


def upgrade() -> None:
    # Added plainly first (SQLite: ALTER TABLE ADD COLUMN), filled, then constrained in one
    # table rebuild on SQLite.
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("ordinal", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("chosen_child_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("branch_preview", sa.Text(), nullable=True))
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("current_leaf_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("chosen_root_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("node_count", sa.Integer(), nullable=False, server_default="0"))
    for statement in _BACKFILL_TREE:
        op.execute(statement)
    if op.get_context().as_sql:
        _backfill_previews_in_sql()
    else:
        _backfill_previews()
    op.execute(_LEAF_PREVIEWS)
    with op.batch_alter_table("chat_messages") as batch:
        batch.alter_column("ordinal", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint("uq_chat_messages_session_seq", type_="unique")
        batch.create_unique_constraint(
            "uq_chat_messages_session_ordinal", ["session_id", "ordinal"]
        )
        batch.create_foreign_key(
            "fk_chat_messages_parent_id_chat_messages",
            "chat_messages",
            ["parent_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.create_index(
        "idx_chat_messages_session_parent", "chat_messages", ["session_id", "parent_id"]
    )


def _backfill_previews() -> None:
    """Each message's branch_preview, walking every session in seq order, in batches."""
    connection = op.get_bind()
    position: tuple[str, int] = ("", 0)
    carried: tuple[str, str | None] = ("", None)  # (session, preview so far)
    update = (
        messages.update()
        .where(messages.c.id == sa.bindparam("message_id"))
        .values(branch_preview=sa.bindparam("preview"))
    )
    while True:
        rows = connection.execute(
            sa.select(messages.c.id, messages.c.session_id, messages.c.seq, messages.c.content)
            .where(sa.tuple_(messages.c.session_id, messages.c.seq) > sa.tuple_(*position))
            .order_by(messages.c.session_id, messages.c.seq)
            .limit(_BACKFILL_BATCH)
        ).all()
        if not rows:
            return
        position = (rows[-1].session_id, rows[-1].seq)
        updates = []
        for row in rows:
            preview = carried[1] if carried[0] == row.session_id else None
            if row.content.strip():
                preview = make_preview(row.content)
            carried = (row.session_id, preview)
            if preview is not None:
                updates.append({"message_id": row.id, "preview": preview})
        if updates:
            connection.execute(update, updates)


# The characters the write path's `\s` matches (Unicode White_Space), as a PostgreSQL regex
# (as in revision 0002).
_PG_WHITESPACE_RUN = r"[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"


def _backfill_previews_in_sql() -> None:
    """For `alembic upgrade --sql` (PostgreSQL only): the same rules, except that a cut may
    fall inside a grapheme cluster, as in revision 0002's SQL backfill."""
    collapsed = f"btrim(regexp_replace(p.content, '{_PG_WHITESPACE_RUN}', ' ', 'g'))"
    op.execute(
        f"""
        UPDATE chat_messages AS m SET branch_preview = (
          SELECT CASE WHEN length(t) > 100 THEN rtrim(left(t, 97)) || '...' ELSE t END
          FROM (SELECT {collapsed} AS t FROM chat_messages p
                WHERE p.session_id = m.session_id AND p.seq <= m.seq AND {collapsed} <> ''
                ORDER BY p.seq DESC LIMIT 1) AS last)
        """
    )


# Every session's current branch, from its leaf up.
_CURRENT_BRANCHES = (
    "WITH RECURSIVE branch(id, parent_id) AS ("
    " SELECT m.id, m.parent_id FROM chat_messages m"
    " JOIN chat_sessions s ON s.current_leaf_id = m.id"
    " UNION ALL"
    " SELECT p.id, p.parent_id FROM chat_messages p JOIN branch b ON p.id = b.parent_id)"
    " SELECT id FROM branch"
)
_KEEP_CURRENT_BRANCHES = (
    f"DELETE FROM chat_messages WHERE id NOT IN ({_CURRENT_BRANCHES})",
    # What the foreign key's cascade does on PostgreSQL (SQLite migrates with them off).
    "DELETE FROM chat_replies_generating WHERE message_id NOT IN (SELECT id FROM chat_messages)",
    # Search entries of the messages deleted, then the others keyed by seq again (through
    # negative values: seq <= ordinal, and the key is checked row by row).
    "DELETE FROM chat_search WHERE seq <> 0 AND NOT EXISTS (SELECT 1 FROM chat_messages m"
    " WHERE m.session_id = chat_search.session_id AND m.ordinal = chat_search.seq)",
    "UPDATE chat_search SET seq = -(SELECT m.seq FROM chat_messages m"
    " WHERE m.session_id = chat_search.session_id AND m.ordinal = chat_search.seq)"
    " WHERE seq <> 0 AND EXISTS (SELECT 1 FROM chat_messages m"
    " WHERE m.session_id = chat_search.session_id AND m.ordinal = chat_search.seq"
    " AND m.seq <> m.ordinal)",
    "UPDATE chat_search SET seq = -seq WHERE seq < 0",
)


def downgrade() -> None:
    for statement in _KEEP_CURRENT_BRANCHES:
        op.execute(statement)
    op.drop_index("idx_chat_messages_session_parent", table_name="chat_messages")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_constraint("fk_chat_messages_parent_id_chat_messages", type_="foreignkey")
        batch.drop_constraint("uq_chat_messages_session_ordinal", type_="unique")
        batch.create_unique_constraint("uq_chat_messages_session_seq", ["session_id", "seq"])
        batch.drop_column("branch_preview")
        batch.drop_column("chosen_child_id")
        batch.drop_column("ordinal")
        batch.drop_column("parent_id")
    # Not a batch: rebuilding chat_sessions on SQLite would recreate its sidebar indexes
    # without their DESC keys. SQLite drops a plain column in place.
    for column in ("node_count", "chosen_root_id", "current_leaf_id"):
        op.drop_column("chat_sessions", column)
