"""Search: each entry is numbered among its owner's entries, and PostgreSQL files a user's owned
words in blocks of those numbers.

The owned words' index of 0005 gives one user's search all of that user's matches: for the user
with half a million entries, 100,000 of them for the prefix `re`, before the ranking window
(app/search/queries.py) keeps the few thousand among their newest 20,000 entries. Here every
entry gets `user_ordinal`, its place among its owner's entries in the order they were written
(0, 1, 2, …), and the owned words are filed under their block of it as well
(`_<key><user_ordinal >> 14>.word`, app/search/fulltext.py `owner_block_key`): a search names
the blocks it reads, the window two or three, and a user with fewer than 16,384 entries (nearly
everyone) has all of theirs in block 0, so the new index has the old one's keys and replaces it
(docs/performance.md, "Blocks of a user's entries").

The database numbers the entries, by a trigger, whoever writes them (this version, or one still
running the previous code while it is replaced): the next number after the owner's newest
entry's. On PostgreSQL the trigger makes one user's entry writes take turns (an advisory lock
held until the writing transaction ends: milliseconds) and takes the entry's id once it has
its turn, so that one user's entries are numbered in the order of their ids with no gaps but
those of deleted entries: the window, a range of ids, is then a range of numbers, and the
blocks it spans are known from its ends. Entries without an owner are not numbered (no
user's search reads them). SQLite writes one transaction at a time already; its trigger numbers
the entry just inserted, and its FTS5 table no longer follows updates of other columns than
`document`. SQLite's search does not read the numbers (its FTS5 index starts reading each word
at the window by rowid); they are kept for one schema on both.

PostgreSQL, without a long lock (as 0013): the column is added (a catalog change); the existing
entries are numbered in batches of `BATCH_ROWS` by (user_id, id), each its own transaction, up to
the newest entry committed when the run started (the transactions writing then are waited
for); then, in one transaction that holds writes to chat_search off for its length (those
written meanwhile being few), the trigger is created and the entries written since are
numbered after their owner's last numbered one. The new GIN index is built `CONCURRENTLY`, and
0005's dropped `CONCURRENTLY` (a process still running the previous code then reads a user's
matches through idx_chat_search_user: a few milliseconds for a typical user, slow for the
heaviest, until it is replaced). A session-level advisory lock keeps other replicas waiting
across the commits. An interrupted run is run again. The batches rewrite every entry (an UPDATE
writes a new row version): run `VACUUM chat_search` afterwards on a large database (at a million
sessions: docs/performance.md). `alembic upgrade --sql`: one UPDATE and a plain index build
inside the script's transaction. SQLite: the same in the migration's transaction.

Downgrade: the trigger, the new index and the column dropped, 0005's index built again
(`CONCURRENTLY` on PostgreSQL).

Revision ID: 0019_search_owner_blocks
Revises: 0018_search_prefix_index
Create Date: 2026-12-08
"""

import logging
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from app.kit.db.migrate import committed_high_water, committing_each_step, drop_invalid_index
from app.kit.db.unavailable import unavailable_reason
from app.search.fulltext import OWNER_BLOCK_BITS, OWNER_KEY_HEX_DIGITS

revision: str = "0019_search_owner_blocks"
down_revision: str | None = "0018_search_prefix_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_ROWS = 10_000
# Where Alembic reports its steps: each long step of the upgrade says how long it took.
_log = logging.getLogger("alembic.runtime.migration")
# The first key of the advisory lock that makes one user's entry writes take turns (the second
# is hashtext(user_id)): its own space (app/tags/queries.py has 0x7A6).
_NUMBERING_LOCK = 0x5EA
_INDEX = "idx_chat_search_owned_blocks"
_OLD_INDEX = "idx_chat_search_owned"
_OLD_INDEX_DEFINITION = "USING gin (chat_search_owned_words(user_id, document))"
_INDEX_DEFINITION = "USING gin (chat_search_owned_block_words(user_id, user_ordinal, document))"

# As chat_search_owned_words (0005; read its reasons for IMMUTABLE, STRICT, PARALLEL
# RESTRICTED and the joined string), each word under its owner's key and block: `_`, 8 hex
# digits of md5(user_id), the block in decimal, `.` (which no word holds, so block 1's words
# are not a prefix of block 12's).
_BLOCK_KEY = (
    f"'_' || left(md5(owner), {OWNER_KEY_HEX_DIGITS}) || (ordinal >> {OWNER_BLOCK_BITS}) || '.'"
)
_BLOCK_WORDS_FUNCTION = f"""
CREATE OR REPLACE FUNCTION chat_search_owned_block_words(
    owner text, ordinal bigint, document tsvector
)
RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL RESTRICTED
AS $$
    SELECT array_to_tsvector(string_to_array(
        {_BLOCK_KEY} || array_to_string(tsvector_to_array(document), ' ' || {_BLOCK_KEY}),
        ' '
    ))
$$
"""

# PL/pgSQL takes a new snapshot for each statement of a volatile function at READ COMMITTED (the
# write paths' level): the newest entry is read once the previous writer of this user has
# committed. The id is taken then too, so that a user's ids and numbers go up together.
_NUMBERING_FUNCTION = f"""
CREATE OR REPLACE FUNCTION chat_search_number_entry() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock({_NUMBERING_LOCK}, hashtext(NEW.user_id));
    NEW.id := nextval(pg_get_serial_sequence('chat_search', 'id'));
    SELECT e.user_ordinal + 1 INTO NEW.user_ordinal FROM chat_search e
        WHERE e.user_id = NEW.user_id ORDER BY e.id DESC LIMIT 1;
    NEW.user_ordinal := coalesce(NEW.user_ordinal, 0);
    RETURN NEW;
END
$$
"""
_POSTGRES_TRIGGER = (
    "CREATE TRIGGER chat_search_number BEFORE INSERT ON chat_search "
    "FOR EACH ROW EXECUTE FUNCTION chat_search_number_entry()"
)
_SQLITE_TRIGGER = (
    "CREATE TRIGGER chat_search_number AFTER INSERT ON chat_search "
    "WHEN new.user_id IS NOT NULL BEGIN "
    "UPDATE chat_search SET user_ordinal = coalesce((SELECT e.user_ordinal FROM chat_search e "
    "WHERE e.user_id = new.user_id AND e.id < new.id ORDER BY e.id DESC LIMIT 1), -1) + 1 "
    "WHERE id = new.id; END"
)

# Every owner's entries numbered in the order of their ids (the SQL script and SQLite: all at
# once).
_NUMBER_ALL = (
    "UPDATE chat_search SET user_ordinal = numbered.ordinal FROM ("
    "SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) - 1 AS ordinal "
    "FROM chat_search WHERE user_id IS NOT NULL) AS numbered "
    "WHERE chat_search.id = numbered.id"
)
# A batch: the next BATCH_ROWS entries by (user_id, id) after (:user, :after), up to :upto,
# numbered on from :next for the first one's owner if it is :user (the batch before ended in
# the middle of their entries); returns the batch's last entry, where the next one starts.
# Unchanged rows are not rewritten (a run again). The order is the database's (its collation).
_NUMBER_BATCH = f"""
WITH batch AS (
    SELECT id, user_id FROM chat_search
    WHERE user_id IS NOT NULL AND (user_id, id) > (:user, :after) AND id <= :upto
    ORDER BY user_id, id LIMIT {BATCH_ROWS}
), numbered AS (
    SELECT id, user_id,
        row_number() OVER (PARTITION BY user_id ORDER BY id) - 1
            + CASE WHEN user_id = :user THEN :next ELSE 0 END AS ordinal,
        row_number() OVER (ORDER BY user_id, id) AS place
    FROM batch
), renumbered AS (
    UPDATE chat_search SET user_ordinal = numbered.ordinal FROM numbered
    WHERE chat_search.id = numbered.id
        AND chat_search.user_ordinal IS DISTINCT FROM numbered.ordinal
)
SELECT user_id, id, ordinal FROM numbered ORDER BY place DESC LIMIT 1
"""
# The entries after :upto (written while the batches ran): each owner's numbered on from their
# last entry up to :upto.
_NUMBER_NEWER = """
UPDATE chat_search SET user_ordinal = numbered.ordinal
FROM (
    SELECT newer.id,
        coalesce((
            SELECT e.user_ordinal FROM chat_search e
            WHERE e.user_id = newer.user_id AND e.id <= :upto ORDER BY e.id DESC LIMIT 1
        ), -1) + row_number() OVER (PARTITION BY newer.user_id ORDER BY newer.id) AS ordinal
    FROM chat_search newer
    WHERE newer.id > :upto AND newer.user_id IS NOT NULL
) AS numbered
WHERE chat_search.id = numbered.id
    AND chat_search.user_ordinal IS DISTINCT FROM numbered.ordinal
"""


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
        # Transactions of their own, each committed before the next begins.
        with bind.engine.connect() as work:
            with work.begin():
                work.execute(
                    sa.text("ALTER TABLE chat_search ADD COLUMN IF NOT EXISTS user_ordinal BIGINT")
                )
                work.execute(sa.text(_BLOCK_WORDS_FUNCTION))
                work.execute(sa.text(_NUMBERING_FUNCTION))
            started = time.perf_counter()
            upto = committed_high_water(work, "chat_search")
            batches = _number_in_batches(work, upto)
            _log.info(
                "Numbered the entries up to id %d in %d batches, %.1f s",
                upto,
                batches,
                time.perf_counter() - started,
            )
            # Entries written since: numbered once without holding writes off, then, with
            # writes held off, the last few, and the trigger that numbers every later one.
            _retrying(work, _NUMBER_NEWER, {"upto": upto})
            started = time.perf_counter()
            with work.begin():
                work.execute(sa.text("LOCK TABLE chat_search IN SHARE ROW EXCLUSIVE MODE"))
                work.execute(sa.text(_NUMBER_NEWER), {"upto": upto})
                work.execute(sa.text("DROP TRIGGER IF EXISTS chat_search_number ON chat_search"))
                work.execute(sa.text(_POSTGRES_TRIGGER))
            _log.info("Held writes to chat_search off for %.3f s", time.perf_counter() - started)
        started = time.perf_counter()
        drop_invalid_index(_INDEX)
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_INDEX} ON chat_search {_INDEX_DEFINITION}"
        )
        _log.info("Built %s in %.1f s", _INDEX, time.perf_counter() - started)
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_OLD_INDEX}")
        # Statistics of the new expression, as autovacuum would gather them later (a sample).
        op.execute("ANALYZE chat_search")


def _number_in_batches(work: sa.Connection, upto: int) -> int:
    """Number the entries up to `upto` in batches by (user_id, id), each committed on its
    own; how many batches it took."""
    user, after, next_ordinal = "", -1, 0
    batches = 0
    while True:
        parameters = {"user": user, "after": after, "next": next_ordinal, "upto": upto}
        last = _retrying(work, _NUMBER_BATCH, parameters)
        if last is None:
            return batches
        batches += 1
        user, after, next_ordinal = last.user_id, last.id, last.ordinal + 1


def _retrying(work: sa.Connection, statement: str, parameters: dict[str, object]) -> Any:
    """Run `statement` in a transaction of its own, again if PostgreSQL undid it because it
    crossed a write of the service (a deadlock): the first row it returned, if any."""
    while True:
        try:
            with work.begin():
                result = work.execute(sa.text(statement), parameters)
                return result.first() if result.returns_rows else None
        except sa.exc.DBAPIError as error:
            if unavailable_reason(error) not in ("deadlock", "serialization"):
                raise


def _upgrade_script() -> None:
    op.execute("ALTER TABLE chat_search ADD COLUMN user_ordinal BIGINT")
    op.execute(_NUMBER_ALL)
    op.execute(_BLOCK_WORDS_FUNCTION)
    op.execute(_NUMBERING_FUNCTION)
    op.execute(_POSTGRES_TRIGGER)
    op.execute(f"CREATE INDEX {_INDEX} ON chat_search {_INDEX_DEFINITION}")
    op.execute(f"DROP INDEX IF EXISTS {_OLD_INDEX}")


def _upgrade_sqlite() -> None:
    op.execute("ALTER TABLE chat_search ADD COLUMN user_ordinal BIGINT")
    # The FTS5 table (0015) indexes `document` alone: other columns' updates leave it be.
    _replace_fts_update_trigger("AFTER UPDATE OF document")
    op.execute(_NUMBER_ALL)
    op.execute(_SQLITE_TRIGGER)


def _replace_fts_update_trigger(when: str) -> None:
    table = "chat_search_fts"
    op.execute("DROP TRIGGER IF EXISTS chat_search_au")
    op.execute(
        f"CREATE TRIGGER chat_search_au {when} ON chat_search BEGIN "
        f"INSERT INTO {table}({table}, rowid, document) VALUES ('delete', old.id, old.document); "
        f"INSERT INTO {table}(rowid, document) VALUES (new.id, new.document); END"
    )


def downgrade() -> None:
    context = op.get_context()
    if context.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS chat_search_number")
        _replace_fts_update_trigger("AFTER UPDATE")
        # SQLite's own DROP COLUMN (3.35): a rebuilt table would lose 0015's triggers.
        op.execute("ALTER TABLE chat_search DROP COLUMN user_ordinal")
        return
    op.execute("DROP TRIGGER IF EXISTS chat_search_number ON chat_search")
    op.execute("DROP FUNCTION IF EXISTS chat_search_number_entry()")
    if context.as_sql:
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {_OLD_INDEX} ON chat_search {_OLD_INDEX_DEFINITION}"
        )
        op.execute(f"DROP INDEX IF EXISTS {_INDEX}")
    else:
        with context.autocommit_block():
            drop_invalid_index(_OLD_INDEX)
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_OLD_INDEX} "
                f"ON chat_search {_OLD_INDEX_DEFINITION}"
            )
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_INDEX}")
    op.execute("DROP FUNCTION IF EXISTS chat_search_owned_block_words(text, bigint, tsvector)")
    op.execute("ALTER TABLE chat_search DROP COLUMN IF EXISTS user_ordinal")
