"""Search as you type: SQLite's FTS5 table keeps prefix indexes of one user's words.

A user's search on SQLite matches the words filed under their key (app/search/fulltext.py,
`owner_key`: `_` and 8 hex digits), each as a prefix. Without a prefix index FTS5 reads and
merges the entries of every word that starts with a short prefix before the ranking window's
rowid bound applies (117,484 entries for the biggest user's `re` at a million sessions). With
`prefix='11 12'` FTS5 also indexes the first 11 and 12 characters of every token: the key and
the first 2 or 3 letters of an owned word, which is then one list of entries, read from the
window on. Lengths are in characters (FTS5 counts UTF-8 characters), and a query's prefix uses
the index whose length it has exactly, a phrase's last word too (a pair of Chinese characters
after the key). Measured in docs/performance.md ("Prefix indexes on SQLite").

SQLite: the FTS5 table is dropped and built again with the option (FTS5 cannot alter it), in
the migration's transaction, which blocks writes to chat_search while it runs (78 to 106 s at
100,000 sessions on the shared test machine, so about 15 minutes at a million); the triggers
of 0015 name the table and keep it in step as before. PostgreSQL: nothing (GIN has no such
option).

Revision ID: 0018_search_prefix_index
Revises: 0017_idempotency_keys
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

from app.search import fulltext

revision: str = "0018_search_prefix_index"
down_revision: str | None = "0017_idempotency_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An owner's key and the first 2 letters of a word, and 3 (fulltext.owner_key).
_KEY_CHARS = 1 + fulltext.OWNER_KEY_HEX_DIGITS
_PREFIX = f"{_KEY_CHARS + 2} {_KEY_CHARS + 3}"


def _rebuild(options: str) -> None:
    table = fulltext.FTS_TABLE
    op.execute(f"DROP TABLE {table}")
    # As migration 0015 made it (`_` joins the owner's key to a word), plus `options`.
    op.execute(
        f"CREATE VIRTUAL TABLE {table} USING fts5("
        "document, content='chat_search', content_rowid='id', "
        "tokenize=\"unicode61 remove_diacritics 0 categories 'L* N* Co M*' tokenchars '_'\""
        f"{options})"
    )
    op.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        _rebuild(f", prefix='{_PREFIX}'")


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        _rebuild("")
