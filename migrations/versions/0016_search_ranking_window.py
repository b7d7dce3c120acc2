"""Search: one user's newest entries are one range of an index.

Best match first is ranked among a user's newest entries (app/search/queries.py,
RANKING_WINDOW_ENTRIES): the window's start is found by walking the user's entries newest
first, and the window's matches are read as that range of the index intersected with the
owned words' matches. idx_chat_search_user becomes (user_id, id): on PostgreSQL the index on
user_id alone orders one user's entries by their place in the table, not by id (SQLite's ended
with the rowid, which is `id`, but saying so keeps one definition for both).

PostgreSQL: the new index is built `CONCURRENTLY` under a temporary name, the old one dropped
`CONCURRENTLY` and the new one renamed: writes to chat_search go on meanwhile (the build
takes about a minute at 11 million entries, docs/performance.md); an invalid index left by an
interrupted build is dropped and built again by the next run. SQLite, and the SQL script of
`make migrations-sql` (one transaction): a plain rebuild, which blocks writes to chat_search
while it runs.

Revision ID: 0016_search_ranking_window
Revises: 0015_search_folding
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

from app.kit.db.migrate import drop_invalid_index

revision: str = "0016_search_ranking_window"
down_revision: str | None = "0015_search_folding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "idx_chat_search_user"
_BUILDING = "idx_chat_search_user_building"


def upgrade() -> None:
    _replace("(user_id, id)")


def downgrade() -> None:
    _replace("(user_id)")


def _replace(columns: str) -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql" or context.as_sql:
        # SQLite; and the SQL script (`make migrations-sql`), which runs as one transaction,
        # where CONCURRENTLY is refused.
        op.execute(f"DROP INDEX IF EXISTS {_INDEX}")
        op.execute(f"CREATE INDEX {_INDEX} ON chat_search {columns}")
        return
    with context.autocommit_block():
        # What an interrupted run left: an invalid index (its build failed), or a valid one
        # built whose rename did not happen.
        drop_invalid_index(_BUILDING)
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_BUILDING} ON chat_search {columns}")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_INDEX}")
        op.execute(f"ALTER INDEX {_BUILDING} RENAME TO {_INDEX}")
