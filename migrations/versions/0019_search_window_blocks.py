"""Search: a user's ranking window reads only its own stretch of the user's matches (PostgreSQL).

A user's search ranks the matches among their newest entries (app/search/queries.py,
RANKING_WINDOW_ENTRIES), but the owned words' GIN index of 0005 yields all of the user's
matches, in no order, before the window keeps the newest: the biggest user's search at a
million sessions read 55,650 entries for `payment` and more for a prefix (docs/performance.md,
"Ranking window"). This index files each entry's owned words once more under the block of ids
the entry falls in (app/search/fulltext.py, ENTRY_BLOCK_BITS): `_<key><block>.<word>`. A
window spans a few blocks, and a search names them, so it reads about the window's matches.
An expression index over chat_search_block_words(user_id, id, document): the table's rows and
the write path are unchanged. SQLite: nothing (FTS5 reads a word's entries from the window's
first rowid on).

PostgreSQL: built `CONCURRENTLY`, so writes to chat_search go on meanwhile; an invalid index
left by an interrupted build is dropped and built again by the next run. The SQL script of
`make migrations-sql` (one transaction, where CONCURRENTLY is refused): a plain build, which
blocks writes to chat_search while it runs.

Revision ID: 0019_search_window_blocks
Revises: 0018_search_prefix_index
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

from app.kit.db.migrate import drop_invalid_index
from app.search.fulltext import ENTRY_BLOCK_BITS, OWNER_KEY_HEX_DIGITS

revision: str = "0019_search_window_blocks"
down_revision: str | None = "0018_search_prefix_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "idx_chat_search_owned_blocks"

# As chat_search_owned_words (migration 0005), the key followed by the entry's block and a dot
# (a word never holds one, so `_<key>5.` never starts a word of block 55). IMMUTABLE, STRICT
# and PARALLEL RESTRICTED for the reasons given there; the key is written twice rather than
# computed in a subquery, which would keep the function from being inlined.
_KEY = (
    f"'_' || left(md5(owner), {OWNER_KEY_HEX_DIGITS}) || (entry >> {ENTRY_BLOCK_BITS})::text || '.'"
)
BLOCK_WORDS_FUNCTION = f"""
CREATE OR REPLACE FUNCTION chat_search_block_words(owner text, entry bigint, document tsvector)
RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL RESTRICTED
AS $$
    SELECT array_to_tsvector(string_to_array(
        {_KEY} || array_to_string(tsvector_to_array(document), ' ' || {_KEY}),
        ' '
    ))
$$
"""
_DEFINITION = "ON chat_search USING gin (chat_search_block_words(user_id, id, document))"


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        return
    op.execute(BLOCK_WORDS_FUNCTION)
    if context.as_sql:
        op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} {_DEFINITION}")
        return
    with context.autocommit_block():
        # What an interrupted run left: an invalid index (its build failed or was cancelled).
        drop_invalid_index(INDEX)
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} {_DEFINITION}")
        # Statistics of the new expression, as autovacuum would gather them later (a sample:
        # seconds at any size).
        op.execute("ANALYZE chat_search")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.execute("DROP FUNCTION IF EXISTS chat_search_block_words(text, bigint, tsvector)")
