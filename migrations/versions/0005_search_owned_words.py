"""Search: one user's search reads only that user's matches from the index (PostgreSQL).

The GIN index of 0004 files every word under the word alone, so a user's search for a common
word read everyone's entries with that word (or, for most users, all of the user's own
entries, tested one by one). This one indexes each entry's words again, each prefixed with
its owner's key (app/search/fulltext.py `owner_key`): `_` and the first 8 hex digits of
md5(user_id). It is an expression index over chat_search_owned_words(user_id, document), so
the table's rows stay as they are and the write path is unchanged; entries without an owner
have no owned words. SQLite's FTS5 index is unchanged.

Building it reads every entry and blocks writes to chat_search meanwhile (about 10 minutes at
11 million entries, docs/performance.md); to avoid that, create it beforehand with
`CREATE INDEX CONCURRENTLY` and the same definition (README), and this migration keeps it.

Revision ID: 0005_search_owned_words
Revises: 0004_search
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

from app.search.fulltext import OWNER_KEY_HEX_DIGITS

revision: str = "0005_search_owned_words"
down_revision: str | None = "0004_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# IMMUTABLE, as an index expression must be: md5, tsvector_to_array and array_to_tsvector
# are. STRICT: an entry without an owner gives NULL, which the index skips. The words are
# joined and split again rather than prefixed in a subquery: a word never holds a space
# (app/search/fulltext.py), and one expression costs a third of a subquery per entry, which counts
# when the index is built over every entry. PARALLEL RESTRICTED although it is safe: the
# planner expects thousands of matches for any owned word (it has no statistics for one
# user's words), and a search planned for two workers spent 2 to 20 ms starting them to read
# a handful of entries.
_OWNER_KEY = f"'_' || left(md5(owner), {OWNER_KEY_HEX_DIGITS})"
OWNED_WORDS_FUNCTION = f"""
CREATE OR REPLACE FUNCTION chat_search_owned_words(owner text, document tsvector)
RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL RESTRICTED
AS $$
    SELECT array_to_tsvector(string_to_array(
        {_OWNER_KEY} || array_to_string(tsvector_to_array(document), ' ' || {_OWNER_KEY}),
        ' '
    ))
$$
"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(OWNED_WORDS_FUNCTION)
    op.execute(
        "CREATE INDEX IF NOT EXISTS idx_chat_search_owned ON chat_search "
        "USING gin (chat_search_owned_words(user_id, document))"
    )
    # Statistics of the new expression, as autovacuum would gather them later (a sample:
    # seconds at any size).
    op.execute("ANALYZE chat_search")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS idx_chat_search_owned")
    op.execute("DROP FUNCTION IF EXISTS chat_search_owned_words(text, tsvector)")
