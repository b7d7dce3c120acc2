"""Helpers shared by the database tests."""

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.kit.db.tables import (
    chat_feedback,
    chat_folders,
    chat_idempotency_keys,
    chat_import_sources,
    chat_imports,
    chat_messages,
    chat_processes,
    chat_replies_generating,
    chat_search,
    chat_session_tags,
    chat_sessions,
    chat_share_messages,
    chat_shares,
    chat_tags,
    metadata,
)
from app.kit.db.types import JSONDocument, UTCDateTime, utc_now
from app.kit.text import make_title
from app.messages import queries as message_queries
from app.search.fulltext import FTS_TABLE
from app.sessions import queries as session_queries
from tests.conftest import make_settings

BASE_REVISION = "0001_base_schema"
METADATA_REVISION = "0002_session_metadata"
SIDEBAR_REVISION = "0003_sidebar_organising"
# What revision 0002_session_metadata adds; revision 0003_sidebar_organising drops its indexes.
METADATA_COLUMNS = {"title", "last_message", "message_count"}
SEED_INDEXES = {"idx_chat_sessions_updated_at", "idx_chat_sessions_user_id_updated"}
# What revision 0003_sidebar_organising adds.
SIDEBAR_COLUMNS = {"pinned"}
SIDEBAR_INDEXES = {"idx_chat_sessions_user_list", "idx_chat_sessions_list"}
# Key columns of the sidebar indexes, in order, as (column, descending).
SORT_KEY = [("pinned", True), ("updated_at", True), ("id", True)]
# What revision 0004_search adds: a table, and on SQLite an FTS5 table and its triggers.
SEARCH_REVISION = "0004_search"
SEARCH_TRIGGERS = {"chat_search_ai", "chat_search_ad", "chat_search_au"}
# Declared in app.kit.db.tables with `ddl_if(dialect="postgresql")`: GIN indexes over a tsvector
# (0004) and over its words under their owner's key and block (0019, 0005 before).
POSTGRES_ONLY_INDEXES = {"idx_chat_search_document", "idx_chat_search_owned_blocks"}
OWNED_WORDS_REVISION = "0005_search_owned_words"
REPLY_LIFECYCLE_REVISION = "0006_reply_lifecycle"
REPLY_LIFECYCLE_TABLES = (chat_processes, chat_replies_generating)
# What revision 0007_message_tree adds.
TREE_REVISION = "0007_message_tree"
TREE_COLUMNS = {
    "chat_messages": {"parent_id", "ordinal", "chosen_child_id", "branch_preview"},
    "chat_sessions": {"current_leaf_id", "chosen_root_id", "node_count"},
}
# What the share-links revision adds (issue 14). Renumbered when it is merged after another
# revision: its name is written here only.
SHARES_REVISION = "0008_share_links"
SHARE_TABLES = (chat_shares, chat_share_messages)
# What revision 0009_feedback adds: a table of its own.
FEEDBACK_REVISION = "0009_feedback"
FEEDBACK_TABLE = chat_feedback
# What revision 0010_title_source adds (the integrator may renumber it: use the constant).
TITLE_SOURCE_REVISION = "0010_title_source"
TITLE_SOURCE_COLUMNS = {"title_source"}
# What the folders-and-tags revision adds (issue 16): three tables, a column and an index of
# chat_sessions. Renumbered when it is merged after another revision: its name is written here
# only.
FOLDERS_TAGS_REVISION = "0012_folders_tags"
# Revision 0015_search_folding (issue 17) reindexes every entry (renumbered at merge: use it).
SEARCH_FOLDING_REVISION = "0015_search_folding"
# Revision 0016_search_ranking_window (issue 17): idx_chat_search_user becomes (user_id, id).
RANKING_WINDOW_REVISION = "0016_search_ranking_window"
FOLDERS_TAGS_TABLES = (chat_folders, chat_tags, chat_session_tags)
FOLDER_COLUMN = "folder_id"
FOLDER_LIST_INDEX = "idx_chat_sessions_user_folder_list"
# What the user_id revision adds (issue 15, Citus preparation): a NOT NULL `user_id` on four
# tables. Renumbered when it is merged after another revision: its name is written here only.
USER_ID_REVISION = "0013_user_id_everywhere"
USER_ID_TABLES = (chat_messages, chat_replies_generating, chat_share_messages, chat_session_tags)
SIDEBAR_INDEX_KEYS = {
    "idx_chat_sessions_user_list": [("user_id", False), ("active", False), *SORT_KEY],
    "idx_chat_sessions_list": [("active", False), *SORT_KEY],
}
# What the imports revision adds (issue 16): two tables. Renumbered when it is merged after
# another revision: its name is written here only.
IMPORTS_REVISION = "0014_imports"
IMPORTS_TABLES = (chat_imports, chat_import_sources)
# What the idempotency-keys revision adds: a table. Renumbered when it is merged after another
# revision: its name is written here only.
IDEMPOTENCY_REVISION = "0017_idempotency_keys"
IDEMPOTENCY_TABLE = chat_idempotency_keys
# SQLite's FTS5 table with prefix indexes. Renumbered when it is merged after another
# revision: its name is written here only.
PREFIX_INDEX_REVISION = "0018_search_prefix_index"
# Each search entry numbered among its owner's, and PostgreSQL's owned words in blocks of them.
# Renumbered when it is merged after another revision: its name is written here only.
OWNER_BLOCKS_REVISION = "0019_search_owner_blocks"
# Tag and folder names keyed canonically (merging what now collides), and the feedback
# export's `stored_at`. Renumbered when it is merged after another revision: its name is
# written here only.
UNICODE_NAMES_REVISION = "0020_unicode_names"
FOLDER_LIST_INDEX_KEYS = [("user_id", False), ("active", False), ("folder_id", False), *SORT_KEY]

# The tables as revision 0001_base_schema creates them: bound with the application's types so
# ids, timestamps and JSON are stored exactly as the application stores them, on both dialects.
base_sessions = sa.table(
    "chat_sessions",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("user_id", sa.Text()),
    sa.column("active", sa.Boolean()),
    sa.column("metadata", JSONDocument),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
base_messages = sa.table(
    "chat_messages",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("seq", sa.Integer()),
    sa.column("role", sa.Text()),
    sa.column("content", sa.Text()),
    sa.column("metadata", JSONDocument),
    sa.column("created_at", UTCDateTime()),
)
# The columns revision 0002_session_metadata adds, read back with the application's types.
session_metadata = sa.table(
    "chat_sessions",
    sa.column("session_id", sa.Text()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("title", sa.Text()),
    sa.column("last_message", sa.Text()),
    sa.column("message_count", sa.Integer()),
)
# The column revision 0003_sidebar_organising adds.
session_pins = sa.table(
    "chat_sessions",
    sa.column("session_id", sa.Text()),
    sa.column("pinned", sa.Boolean()),
)


async def insert_base_session(
    conn: AsyncConnection, session_id: str, *, at: datetime, user_id: str = "alice"
) -> None:
    """A session with the columns of revision 0001 (the later ones take their defaults)."""
    await conn.execute(
        sa.insert(base_sessions).values(
            id=uuid.uuid4(),
            session_id=session_id,
            user_id=user_id,
            active=True,
            metadata={},
            created_at=at,
            updated_at=at,
        )
    )


async def store_base_session(database: Database, session_id: str, *, at: datetime) -> None:
    """`insert_base_session` (for alice) in a transaction of its own."""
    async with database.write() as conn:
        await insert_base_session(conn, session_id, at=at)


async def tables_added_over_a_session(
    url: str, engine: AsyncEngine, revision: str, *, at: datetime
) -> set[str]:
    """Upgrade to `revision` from the revision before it, over a session ("before") written
    there: the tables the upgrade added. The session is still there after it."""
    await upgrade(url, down_revision_of(revision))
    async with app_database(url) as database:
        await store_base_session(database, "before", at=at)
    async with engine.connect() as conn:
        tables_before = await table_names(conn)
    await upgrade(url, revision)
    async with engine.connect() as conn:
        sessions = await conn.execute(sa.text("SELECT session_id FROM chat_sessions"))
        assert sessions.scalars().all() == ["before"]
        return await table_names(conn) - tables_before


def plain_engine(url: str) -> AsyncEngine:
    """An engine without a pool, so no connection outlives the block that used it."""
    return create_async_engine(url, poolclass=pool.NullPool)


def head_revision() -> str:
    head = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations have more than one head"
    return head


def down_revision_of(revision: str) -> str:
    """The revision `revision` follows."""
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_revision(revision)
    assert script is not None, revision
    assert isinstance(script.down_revision, str), revision
    return script.down_revision


async def upgrade(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate.upgrade, url, revision)


async def downgrade(url: str, revision: str) -> None:
    await asyncio.to_thread(migrate.downgrade, url, revision)


async def alembic_versions(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
    return [str(version) for version in rows.scalars()]


async def table_names(conn: AsyncConnection) -> set[str]:
    return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def column_names(conn: AsyncConnection, table: str) -> set[str]:
    columns = await conn.run_sync(lambda sync: sa.inspect(sync).get_columns(table))
    return {column["name"] for column in columns}


async def index_names(conn: AsyncConnection, table: str) -> set[str]:
    """The indexes of `table` created as indexes (not those backing a unique constraint)."""
    indexes = await conn.run_sync(lambda sync: sa.inspect(sync).get_indexes(table))
    return {str(index["name"]) for index in indexes if "duplicates_constraint" not in index}


async def index_definitions(conn: AsyncConnection, table: str) -> dict[str, str]:
    """Each index of `table` and the SQL that defines it, as the database reports it."""
    if conn.dialect.name == "postgresql":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :table"
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :table"
    rows = await conn.execute(sa.text(query), {"table": table})
    return {str(name): str(sql) for name, sql in rows}


async def index_keys(conn: AsyncConnection, index: str) -> list[tuple[str, bool]]:
    """The key columns of `index` in order, each with whether it is descending."""
    if conn.dialect.name == "sqlite":
        # One row per column of the index entry; key = 0 for the rowid at the end.
        rows = await conn.exec_driver_sql(f"PRAGMA index_xinfo('{index}')")
        return [(str(row["name"]), bool(row["desc"])) for row in rows.mappings() if row["key"]]
    rows = await conn.execute(
        sa.text(
            "SELECT a.attname AS name, (i.indoption[k.n - 1] & 1) = 1 AS desc"
            " FROM pg_index i"
            " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indexrelid = CAST(:index AS regclass)"
            " ORDER BY k.n"
        ),
        {"index": index},
    )
    return [(str(row["name"]), bool(row["desc"])) for row in rows.mappings()]


def declared_index_keys(index: sa.Index) -> list[tuple[str, bool]]:
    """The key columns app.kit.db.tables declares for `index`: columns, or text like `x DESC`."""
    keys: list[tuple[str, bool]] = []
    for expression in index.expressions:
        if isinstance(expression, sa.Column):
            keys.append((expression.name, False))
            continue
        assert isinstance(expression, sa.TextClause), expression
        name, *order = expression.text.split()
        assert [word.upper() for word in order] in ([], ["ASC"], ["DESC"]), expression.text
        keys.append((name, [word.upper() for word in order] == ["DESC"]))
    return keys


def assert_seed_index_definitions(dialect: str, definitions: dict[str, str]) -> None:
    """The two indexes revision 0002 creates, as it creates them: descending, one partial."""
    user_index = definitions["idx_chat_sessions_user_id_updated"]
    assert "(user_id, updated_at DESC)" in user_index
    assert "(updated_at DESC)" in definitions["idx_chat_sessions_updated_at"]
    if dialect == "postgresql":
        assert user_index.endswith(" WHERE (user_id IS NOT NULL)")
    else:
        assert user_index.endswith(" WHERE user_id IS NOT NULL")
    assert "WHERE" not in definitions["idx_chat_sessions_updated_at"]


async def pinned_by_id(conn: AsyncConnection) -> dict[str, bool]:
    rows = await conn.execute(sa.select(session_pins.c.session_id, session_pins.c.pinned))
    return {str(session_id): bool(pinned) for session_id, pinned in rows}


async def nullability(conn: AsyncConnection, table: str) -> dict[str, bool]:
    """Each column of `table` in the database, and whether it is nullable."""
    columns = await conn.run_sync(lambda sync: sa.inspect(sync).get_columns(table))
    return {column["name"]: column["nullable"] for column in columns}


def _is_expression_index(index: sa.Index) -> bool:
    """An index over one function call, declared as text (`f(a, b)`)."""
    return any(
        isinstance(expression, sa.TextClause) and "(" in expression.text
        for expression in index.expressions
    )


def _has_text_keys(index: sa.Index) -> bool:
    return any(not isinstance(expression, sa.Column) for expression in index.expressions)


def _is_fts_table(name: str) -> bool:
    """The FTS5 table or one of the shadow tables SQLite keeps for it."""
    return name == FTS_TABLE or name.startswith(FTS_TABLE + "_")


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        # Alembic cannot reflect SQLite's expression indexes; there are none to compare (the
        # one app.kit.db.tables declares is PostgreSQL's), and the names are compared below.
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        diffs: list[Any] = compare_metadata(context, metadata)
    if connection.dialect.name == "sqlite":
        # The FTS5 index lives outside app.kit.db.tables, and the GIN index outside SQLite;
        # test_search_migration checks both.
        diffs = [
            diff
            for diff in diffs
            if not (
                isinstance(diff, tuple)
                and (
                    (diff[0] == "remove_table" and _is_fts_table(diff[1].name))
                    or (diff[0] == "add_index" and diff[1].name in POSTGRES_ONLY_INDEXES)
                )
            )
        ]
        # Alembic cannot compare SQLite indexes declared with text (`updated_at DESC`): it
        # reports them removed and added again. assert_schema_matches_tables compares them.
        textual = {
            index.name
            for table in metadata.tables.values()
            for index in table.indexes
            if _has_text_keys(index)
        }
        diffs = [
            diff
            for diff in diffs
            if not (
                isinstance(diff, tuple)
                and diff[0] in {"add_index", "remove_index"}
                and diff[1].name in textual
            )
        ]
    return diffs


async def assert_schema_matches_tables(conn: AsyncConnection) -> None:
    """The migrated schema is the one app.kit.db.tables describes: nothing drifted."""
    for table in (
        chat_sessions,
        chat_messages,
        chat_search,
        *REPLY_LIFECYCLE_TABLES,
        *SHARE_TABLES,
        FEEDBACK_TABLE,
        *FOLDERS_TAGS_TABLES,
        *IMPORTS_TABLES,
        IDEMPOTENCY_TABLE,
    ):
        assert await nullability(conn, table.name) == {
            column.name: column.nullable for column in table.columns
        }, table.name
        indexes = [
            index
            for index in table.indexes
            if conn.dialect.name == "postgresql" or index.name not in POSTGRES_ONLY_INDEXES
        ]
        # By name and key columns too, since the drift check skips some indexes on SQLite.
        assert await index_names(conn, table.name) == {str(index.name) for index in indexes}, (
            table.name
        )
        definitions = await index_definitions(conn, table.name)
        for index in indexes:
            if _is_expression_index(index):
                [expression] = index.expressions
                assert isinstance(expression, sa.TextClause), index.name
                assert expression.text in definitions[str(index.name)], index.name
                continue
            assert await index_keys(conn, str(index.name)) == declared_index_keys(index), index.name
    assert await conn.run_sync(_drift) == []


async def leave_an_invalid_index(engine: AsyncEngine, name: str) -> None:
    """An index `name` on chat_search as a `CREATE INDEX CONCURRENTLY` that failed leaves it:
    invalid (PostgreSQL)."""
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        # A concurrent build that fails (duplicate keys) leaves its index invalid.
        with pytest.raises(sa.exc.IntegrityError):
            await autocommit.exec_driver_sql(
                f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON chat_search (user_id)"
            )


@asynccontextmanager
async def captured_statements(engine: AsyncEngine) -> AsyncIterator[list[tuple[str, Any]]]:
    """The SQL (and its parameters) sent to the database inside the block."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)


async def store_text(database: Database, session_id: str, user_id: str | None, text: str) -> None:
    """A session (created if absent) with one more user message, `text`, through the write
    path: its title and its search entries as the service writes them."""
    now = utc_now()
    async with database.write() as conn:
        await session_queries.create_session_if_absent(
            conn, session_id=session_id, user_id=user_id, now=now
        )
        await message_queries.append_message(
            conn,
            session_id=session_id,
            role="user",
            content=text,
            metadata={},
            title=make_title(text),
            preview=None,
            now=now,
        )


@asynccontextmanager
async def app_database(url: str) -> AsyncIterator[Database]:
    """The application's Database on `url` (on SQLite it turns foreign keys on for every
    connection), disposed at the end."""
    database = Database(create_engine(make_settings(url)))
    try:
        yield database
    finally:
        await database.dispose()
