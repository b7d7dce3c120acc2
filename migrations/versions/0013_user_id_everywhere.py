"""Every user's table carries `user_id`: chat_messages, chat_replies_generating,
chat_share_messages and chat_session_tags gain the owner of their rows, NOT NULL.

The column Citus would distribute every table by (docs/scaling.md), added while it is cheap.
Each row takes its parent's owner: a message its session's, a reply in progress its message's,
a link's message the link's, a tag link its tag's; NO_OWNER ("") where the parent has none
(open mode without `user_id`) or is gone (an orphan SQLite kept). The write paths fill it
from this revision on.

On PostgreSQL nothing holds a long lock: the column is added (a catalog change), then filled
in batches of `BATCH_ROWS` rows by ranges of the primary key's first column, each batch its own
transaction (Alembic's autocommit block). Then, table by table: a `CHECK (user_id IS NOT
NULL) NOT VALID` constraint stops new rows without it, one UPDATE fills what the batches
missed (rows a previous version wrote meanwhile), the constraint is validated without
blocking writes, `SET NOT NULL` uses it instead of scanning the table (PostgreSQL 12+), and
it is dropped. A process of the previous version, which does not write `user_id`, keeps
working during the batches and fails to store messages from the constraint on: stop it
before that (or accept its failed writes until it is replaced). The steps are idempotent: a
run that was interrupted is run again. A session-level advisory lock keeps other replicas
waiting across the batches' commits, as migrations/env.py's transaction lock does otherwise.

`alembic upgrade --sql` prints one UPDATE per table inside the script's one transaction (it
cannot loop over batches): fine for a small database, a long lock on a large one. SQLite
fills the column with one UPDATE per table and rebuilds the four tables for NOT NULL (it
cannot alter a column).

Downgrade drops the four columns.

Revision ID: 0013_user_id_everywhere
Revises: 0012_folders_tags
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db.migrate import committing_each_step

revision: str = "0013_user_id_everywhere"
down_revision: str | None = "0012_folders_tags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_ROWS = 10_000

# Each table, the first column of its primary key (the batches' ranges), and its rows' owner
# as a correlated subquery (the same SQL on both databases), in the order they are filled: a
# reply in progress takes its message's owner, so messages come first.
_PARENTS: dict[str, tuple[str, str]] = {
    "chat_messages": (
        "id",
        "SELECT s.user_id FROM chat_sessions s WHERE s.session_id = chat_messages.session_id",
    ),
    "chat_replies_generating": (
        "message_id",
        "SELECT m.user_id FROM chat_messages m WHERE m.id = chat_replies_generating.message_id",
    ),
    "chat_share_messages": (
        "share_id",
        "SELECT s.user_id FROM chat_shares s WHERE s.share_id = chat_share_messages.share_id",
    ),
    "chat_session_tags": (
        "session_id",
        "SELECT t.user_id FROM chat_tags t WHERE t.id = chat_session_tags.tag_id",
    ),
}
# NO_OWNER where the parent has no owner, or no parent: SQLite's foreign keys are only
# enforced on connections that turn them on, so a row may have outlived its session there.
OWNERS = {table: (key, f"coalesce(({parent}), '')") for table, (key, parent) in _PARENTS.items()}


def _check_name(table: str) -> str:
    return f"ck_{table}_user_id_not_null"


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name == "sqlite":
        _upgrade_sqlite()
    elif context.as_sql:
        _upgrade_script()
    else:
        _upgrade_postgresql()


def _upgrade_postgresql() -> None:
    with committing_each_step() as bind:
        for table in OWNERS:
            bind.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS user_id TEXT"))
        for table, (key, owner) in OWNERS.items():
            _fill_in_batches(bind, table, key, owner)
        for table, (_key, owner) in OWNERS.items():
            check = _check_name(table)
            bind.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}"))
            bind.execute(
                sa.text(
                    f"ALTER TABLE {table} ADD CONSTRAINT {check}"
                    " CHECK (user_id IS NOT NULL) NOT VALID"
                )
            )
            # What the batches missed: rows written meanwhile (a previous version's), now
            # that the constraint stops more of them.
            bind.execute(sa.text(f"UPDATE {table} SET user_id = {owner} WHERE user_id IS NULL"))
            bind.execute(sa.text(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}"))
            bind.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN user_id SET NOT NULL"))
            bind.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT {check}"))


def _fill_in_batches(bind: sa.Connection, table: str, key: str, owner: str) -> None:
    """Fill `user_id` one range of `key` at a time, each UPDATE committed on its own (the
    caller's autocommit block)."""
    after: object = None
    while True:
        # The first range has no lower bound (a typed NULL would not do for every key type).
        above = "" if after is None else f"{key} > :after"
        upto = bind.execute(
            sa.text(
                # The range's last key (PostgreSQL has no max() of uuid).
                f"SELECT {key} FROM (SELECT {key} FROM {table}"
                f" {'WHERE ' + above if above else ''} ORDER BY {key} LIMIT {BATCH_ROWS}) AS batch"
                f" ORDER BY {key} DESC LIMIT 1"
            ),
            {"after": after} if above else {},
        ).scalar()
        if upto is None:
            break
        bind.execute(
            sa.text(
                f"UPDATE {table} SET user_id = {owner}"
                f" WHERE {above + ' AND ' if above else ''}{key} <= :upto AND user_id IS NULL"
            ),
            {"after": after, "upto": upto} if above else {"upto": upto},
        )
        after = upto


def _upgrade_script() -> None:
    for table in OWNERS:
        op.add_column(table, sa.Column("user_id", sa.Text(), nullable=True))
    for table, (_key, owner) in OWNERS.items():
        op.execute(f"UPDATE {table} SET user_id = {owner}")
    for table in OWNERS:
        op.alter_column(table, "user_id", existing_type=sa.Text(), nullable=False)


def _upgrade_sqlite() -> None:
    for table in OWNERS:
        op.add_column(table, sa.Column("user_id", sa.Text(), nullable=True))
    for table, (_key, owner) in OWNERS.items():
        op.execute(f"UPDATE {table} SET user_id = {owner}")
    for table in OWNERS:
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.alter_column("user_id", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    for table in reversed(OWNERS):
        if op.get_context().dialect.name == "sqlite":
            with op.batch_alter_table(table, recreate="always") as batch:
                batch.drop_column("user_id")
        else:
            op.drop_column(table, "user_id")
