"""Revision 0004_search on both databases: the backfill of existing titles and messages indexes
exactly what the write path would, in batches; downgrade removes the index and its SQLite
machinery; and a one-user search reads that user's entries through an index."""

import itertools
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.auth.access import Caller
from app.kit.db import migrate
from app.kit.db.engine import Database
from app.kit.db.tables import SEARCH_TITLE_SEQ, chat_search
from app.messages import queries as message_queries
from app.search import queries as search_queries
from app.search.fulltext import (
    FTS_TABLE,
    OWNER_BLOCK_BITS,
    document,
    owned_document,
    owner_block_key,
    owner_key,
    postgres_owned_tsquery,
    query_words,
)
from app.sessions.queries import SessionFilter
from app.sessions.service import get_sessions_list
from tests.db.helpers import (
    BASE_REVISION,
    OWNED_WORDS_REVISION,
    POSTGRES_ONLY_INDEXES,
    SEARCH_REVISION,
    SEARCH_TRIGGERS,
    SIDEBAR_REVISION,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    base_messages,
    captured_statements,
    downgrade,
    head_revision,
    index_definitions,
    index_names,
    store_text,
    table_names,
    upgrade,
)
from tests.db.seed import (
    FAMILY,
    SEED,
    T0,
    SeedMessage,
    SeedSession,
    base_rows,
    insert_base_data,
)

OPEN = Caller.open_mode()

# Beside SEED (system prompts, a user message that is not the first, long text, an emoji
# cluster, a session without messages, one without a user message): text in several scripts,
# failed replies (no text), text without a single word, and words longer than the cap.
EXTRA_SEED = (
    SeedSession(
        "scripts",
        "dana",
        T0,
        (
            SeedMessage(
                1,
                "user",
                "\u0939\u093f\u0928\u094d\u0926\u0940 \u092e\u0947\u0902 \u092e\u0926\u0926",
                T0,
            ),
            SeedMessage(
                2,
                "assistant",
                "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \uff2b\uff35\uff22\uff25",
                T0,
            ),
            SeedMessage(
                3,
                "user",
                "cafe\u0301 \u0301stray na\u00efve \u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3",
                T0,
            ),
            SeedMessage(
                4,
                "assistant",
                f"{FAMILY} \U0001f389 emoji only around words \U0001f1eb\U0001f1f7",
                T0,
            ),
        ),
    ),
    SeedSession(
        "failed",
        "dana",
        T0,
        (
            SeedMessage(1, "user", "Will the reply fail?", T0),
            SeedMessage(2, "assistant", "", T0),
            SeedMessage(3, "user", "!!! ??? ...", T0),
            SeedMessage(4, "assistant", "   \n\t ", T0),
        ),
    ),
    SeedSession(
        "wordless",
        None,
        T0,
        (SeedMessage(1, "user", "\U0001f600 \U0001f600 !!!", T0),),
    ),
    SeedSession(
        "long-words",
        "erin",
        T0,
        (SeedMessage(1, "user", "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + " x", T0),),
    ),
)
ALL_SEED = SEED + EXTRA_SEED

Entries = dict[tuple[str, int], tuple[str | None, str]]


async def seed_at_sidebar_revision(
    url: str, engine: AsyncEngine, seed: tuple[SeedSession, ...]
) -> None:
    """A database at revision 0003 holding `seed`, as 0002 and 0003 left it."""
    await upgrade(url, BASE_REVISION)
    async with engine.begin() as conn:
        await insert_base_data(conn, seed)
    await upgrade(url, SIDEBAR_REVISION)
    async with engine.connect() as conn:
        assert "chat_search" not in await table_names(conn)


async def stored_entries(conn: AsyncConnection) -> Entries:
    """(session_id, seq) -> (user_id, document as text) of every chat_search row."""
    rows = await conn.execute(
        sa.text("SELECT session_id, seq, user_id, CAST(document AS TEXT) FROM chat_search")
    )
    return {(row[0], row[1]): (row[2], row[3]) for row in rows}


def head_words(dialect: str, user_id: str | None, text: str) -> str:
    """An entry's document as the write path makes it (on SQLite with the owner's words)."""
    words = document(text)
    return owned_document(words, user_id) if dialect == "sqlite" else words


async def expected_entries(
    conn: AsyncConnection, rule: Callable[[str, str | None, str], str] = head_words
) -> Entries:
    """What `rule` (by default the write path) would have indexed for the titles and messages
    stored: each text with words; on PostgreSQL as to_tsvector makes it (weight A for
    titles)."""
    sessions = await conn.execute(sa.text("SELECT session_id, user_id, title FROM chat_sessions"))
    owners: dict[str, str | None] = {}
    texts: list[tuple[str, int, str]] = []
    for session_id, user_id, title in sessions:
        owners[session_id] = user_id
        if title is not None:
            texts.append((session_id, SEARCH_TITLE_SEQ, title))
    messages = await conn.execute(sa.text("SELECT session_id, seq, content FROM chat_messages"))
    texts.extend((session_id, seq, content) for session_id, seq, content in messages)
    expected: Entries = {}
    for session_id, seq, text in texts:
        words = rule(conn.dialect.name, owners[session_id], text)
        if not words:
            continue
        if conn.dialect.name == "postgresql":
            tsvector = "to_tsvector('simple', :doc)"
            if seq == SEARCH_TITLE_SEQ:
                tsvector = f"setweight({tsvector}, 'A')"
            words = (
                await conn.execute(sa.text(f"SELECT CAST({tsvector} AS TEXT)"), {"doc": words})
            ).scalar_one()
        expected[(session_id, seq)] = (owners[session_id], words)
    return expected


async def assert_sqlite_index_consistent(conn: AsyncConnection) -> None:
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql(
            f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)"
        )


async def found(database: Database, q: str, user_id: str | None = None) -> list[str]:
    page = await get_sessions_list(database, OPEN, user_id=user_id, query=q, page_size=100)
    return [summary.session_id for summary in page.sessions]


async def test_upgrade_indexes_existing_titles_and_messages_like_the_write_path(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_sidebar_revision(fresh_url, fresh_engine, ALL_SEED)
    async with fresh_engine.begin() as conn:
        # Renamed while on 0003: the title set by hand is what gets indexed.
        await conn.execute(
            sa.text(
                "UPDATE chat_sessions SET title = 'Hand-picked Title' WHERE session_id = 'emoji'"
            )
        )
        messages_before = await base_rows(conn, base_messages)

    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        stored = await stored_entries(conn)
        expected = await expected_entries(conn)
        await assert_sqlite_index_consistent(conn)
        assert await base_rows(conn, base_messages) == messages_before
    assert stored == expected
    # Guards the data: each case is in it, or left out, as meant.
    assert ("first-user-later", SEARCH_TITLE_SEQ) in stored
    assert ("no-user", SEARCH_TITLE_SEQ) not in stored
    assert ("emoji", SEARCH_TITLE_SEQ) in stored
    assert {key for key in stored if key[0] == "failed"} == {("failed", 0), ("failed", 1)}
    assert not any(key[0] in {"wordless", "empty"} for key in stored)
    assert ("scripts", 4) in stored

    async with app_database(fresh_url) as database:
        assert await found(database, "hand picked") == ["emoji"]
        assert await found(database, "\u0939\u093f\u0928") == ["scripts"]
        assert await found(database, "\u65e5\u672c") == ["scripts"]
        assert await found(database, "kube stray") == []
        assert await found(database, "stray caf\u00e9") == ["scripts"]
        assert await found(database, "\u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2") == ["scripts"]
        assert await found(database, "pneumono x") == ["long-words"]
        assert await found(database, "helpful assistant") == ["first-user-later"]
        assert await found(database, "send me", user_id="alice") == ["no-user"]
        assert await found(database, "fail") == ["failed"]
        # Written after the upgrade, by the write path, on top of the backfilled entries.
        async with database.write() as conn:
            stored_message = await message_queries.append_message(
                conn,
                session_id="no-user",
                role="assistant",
                content="A zebra crossing",
                metadata={},
                title=None,
                preview=None,
                now=T0 + timedelta(days=1),
            )
        assert stored_message is not None
        assert await found(database, "zebra") == ["no-user"]


async def test_the_backfill_covers_more_rows_than_one_batch(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(fresh_url))
    batch_size = script.get_revision(SEARCH_REVISION).module._BACKFILL_BATCH
    assert isinstance(batch_size, int)
    count = batch_size + 3
    # Every session gets a title and two messages: titles and messages both span batches.
    seed = tuple(
        SeedSession(
            f"s-{i:05d}",
            f"user-{i % 7}",
            T0,
            (
                SeedMessage(1, "user", f"question {i} about w{i}", T0),
                SeedMessage(2, "assistant", f"answer {i}", T0),
            ),
        )
        for i in range(count)
    )
    await seed_at_sidebar_revision(fresh_url, fresh_engine, seed)

    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        stored = await stored_entries(conn)
        await assert_sqlite_index_consistent(conn)
    assert set(stored) == {(f"s-{i:05d}", seq) for i in range(count) for seq in (0, 1, 2)}
    for i in (0, batch_size - 1, batch_size, count - 1):
        # As document() writes it, and as to_tsvector() writes that on PostgreSQL.
        user_id = f"user-{i % 7}"
        words = (
            owned_document(f"answer {i}", user_id) if backend == "sqlite" else f"'{i}':2 'answer':1"
        )
        assert stored[(f"s-{i:05d}", 2)] == (user_id, words)
    async with app_database(fresh_url) as database:
        assert await found(database, f"w{count - 1}") == [f"s-{count - 1:05d}"]
        assert await found(
            database, f"question {batch_size}", user_id=f"user-{batch_size % 7}"
        ) == [f"s-{batch_size:05d}"]


async def sqlite_objects(conn: AsyncConnection) -> set[str]:
    """Tables, virtual tables, shadow tables and triggers of the search index on SQLite."""
    rows = await conn.execute(
        sa.text(
            "SELECT name FROM sqlite_master WHERE name LIKE 'chat_search%' "
            "AND type IN ('table', 'trigger', 'index')"
        )
    )
    return {str(name) for name in rows.scalars()}


async def test_head_creates_the_index_each_database_searches_with(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
        indexes = await index_names(conn, "chat_search")
        if backend == "postgresql":
            assert indexes == {"idx_chat_search_user"} | POSTGRES_ONLY_INDEXES
            definition = (
                await conn.execute(
                    sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                    {"name": "idx_chat_search_document"},
                )
            ).scalar_one()
            assert "USING gin (document)" in definition
            column_type = (
                await conn.execute(
                    sa.text(
                        "SELECT data_type FROM information_schema.columns "
                        "WHERE table_name = 'chat_search' AND column_name = 'document'"
                    )
                )
            ).scalar_one()
            assert column_type == "tsvector"
        else:
            assert indexes == {"idx_chat_search_user"}
            objects = await sqlite_objects(conn)
            assert SEARCH_TRIGGERS | {"chat_search", FTS_TABLE} <= objects
            fts_sql = (
                await conn.execute(
                    sa.text("SELECT sql FROM sqlite_master WHERE name = :name"),
                    {"name": FTS_TABLE},
                )
            ).scalar_one()
            assert "content='chat_search'" in fts_sql
            assert "content_rowid='id'" in fts_sql
            assert "categories 'L* N* Co M*'" in fts_sql
            # An INTEGER PRIMARY KEY: the rowid itself, which VACUUM never renumbers.
            columns = (await conn.exec_driver_sql("PRAGMA table_info(chat_search)")).mappings()
            keys = [(row["name"], str(row["type"]).upper()) for row in columns if row["pk"]]
            assert keys == [("id", "INTEGER")]


async def test_downgrade_removes_the_index_and_upgrade_rebuilds_it(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_sidebar_revision(fresh_url, fresh_engine, SEED)
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        backfilled = await stored_entries(conn)
        sessions_before = await base_rows(conn, base_messages)
    assert backfilled

    await downgrade(fresh_url, SIDEBAR_REVISION)

    async with fresh_engine.begin() as conn:
        assert await alembic_versions(conn) == [SIDEBAR_REVISION]
        assert "chat_search" not in await table_names(conn)
        if backend == "sqlite":
            assert await sqlite_objects(conn) == set()
        else:
            leftovers = await conn.execute(
                sa.text(
                    "SELECT relname FROM pg_class WHERE relname LIKE 'chat_search%' "
                    "OR relname LIKE 'idx_chat_search%'"
                )
            )
            assert list(leftovers.scalars()) == []
        assert await base_rows(conn, base_messages) == sessions_before
        # Written while on 0003 (a replica on the old code): the next upgrade indexes it.
        await conn.execute(
            sa.insert(base_messages).values(
                id=uuid.uuid4(),
                session_id="empty",
                seq=1,
                role="user",
                content="Written during the downgrade",
                metadata={},
                created_at=T0,
            )
        )
        # Deletes on 0003 leave nothing behind in an index that no longer exists.
        await conn.execute(sa.text("DELETE FROM chat_sessions WHERE session_id = 'long-last'"))

    await upgrade(fresh_url)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        await assert_schema_matches_tables(conn)
        await assert_sqlite_index_consistent(conn)
        rebuilt = await stored_entries(conn)
    expected = {key: value for key, value in backfilled.items() if key[0] != "long-last"}
    assert ("empty", 1) in rebuilt
    assert {key: value for key, value in rebuilt.items() if key != ("empty", 1)} == expected
    async with app_database(fresh_url) as database:
        assert await found(database, "downgrade") == ["empty"]
        assert await found(database, "step by step") == []


async def test_owned_words_cover_entries_indexed_before_them_and_go_on_downgrade(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    """Revision 0005 indexes the entries 0004 made (one user's search finds them); its
    downgrade leaves neither the index nor the function behind."""
    await seed_at_sidebar_revision(fresh_url, fresh_engine, ALL_SEED)
    await upgrade(fresh_url, SEARCH_REVISION)
    await upgrade(fresh_url, OWNED_WORDS_REVISION)
    # The app's search reads the head schema (snippets find messages by ordinal, 0007); the
    # later revisions leave the search index as 0005 made it.
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        assert await found(database, "send me", user_id="alice") == ["no-user"]
        assert await found(database, "send me", user_id="bob") == []
        assert await found(database, "migrate downtime", user_id="alice") == ["first-user-later"]

    await downgrade(fresh_url, SEARCH_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [SEARCH_REVISION]
        assert "idx_chat_search_owned" not in await index_names(conn, "chat_search")
        if backend == "postgresql":
            functions = await conn.execute(
                sa.text("SELECT proname FROM pg_proc WHERE proname LIKE 'chat_search%'")
            )
            assert list(functions.scalars()) == []


async def test_an_index_built_beforehand_without_blocking_is_kept(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    """The README's way to avoid 0005's lock on a large database: the function as 0005
    creates it (`make migrations-sql` prints the same statement), CREATE INDEX CONCURRENTLY,
    then the upgrade, which keeps that index."""
    if backend != "postgresql":
        pytest.skip("owned words are PostgreSQL's")
    await seed_at_sidebar_revision(fresh_url, fresh_engine, ALL_SEED)
    await upgrade(fresh_url, SEARCH_REVISION)
    script = ScriptDirectory.from_config(migrate.alembic_config(fresh_url))
    function_sql = script.get_revision(OWNED_WORDS_REVISION).module.OWNED_WORDS_FUNCTION
    async with fresh_engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql(function_sql)
        await autocommit.exec_driver_sql(
            "CREATE INDEX CONCURRENTLY idx_chat_search_owned ON chat_search "
            "USING gin (chat_search_owned_words(user_id, document))"
        )
        built = await index_definitions(conn, "chat_search")

    await upgrade(fresh_url, OWNED_WORDS_REVISION)

    async with fresh_engine.connect() as conn:
        # The index built beforehand, as it was built.
        after = await index_definitions(conn, "chat_search")
        assert after["idx_chat_search_owned"] == built["idx_chat_search_owned"]
    # 0019 replaces it by the owned words in blocks.
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        await assert_schema_matches_tables(conn)
    async with app_database(fresh_url) as database:
        assert await found(database, "send me", user_id="alice") == ["no-user"]


# --- A one-user search reads through an index ---------------------------------------------

PLAN_USERS = 150
PLAN_SESSIONS_PER_USER = 20


async def fill_for_plan(database: Database) -> None:
    """PLAN_USERS users with PLAN_SESSIONS_PER_USER sessions each, a title and a message each
    (6,000 entries), then fresh statistics."""
    sessions = sa.table(
        "chat_sessions",
        sa.column("id", sa.Uuid()),
        sa.column("session_id", sa.Text()),
        sa.column("user_id", sa.Text()),
        sa.column("active", sa.Boolean()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
        sa.column("message_count", sa.Integer()),
        sa.column("title", sa.Text()),
    )
    rows: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for u in range(PLAN_USERS):
        for n in range(PLAN_SESSIONS_PER_USER):
            session_id = f"u{u}-s{n}"
            title = f"report {n} on topic{u % 10}"
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "session_id": session_id,
                    "user_id": f"user-{u}",
                    "active": True,
                    "created_at": T0,
                    "updated_at": T0 + timedelta(seconds=n),
                    "message_count": 1,
                    "title": title,
                }
            )
            for seq, text in ((0, title), (1, f"message about topic{u % 10} number {n}")):
                entries.append({"sid": session_id, "uid": f"user-{u}", "seq": seq, "text": text})
    async with database.write() as conn:
        for entry in entries:
            entry["doc"] = head_words(conn.dialect.name, entry["uid"], entry.pop("text"))
        await conn.execute(sa.insert(sessions), rows)
        postgres = conn.dialect.name == "postgresql"
        doc: Any = sa.bindparam("doc")
        if postgres:
            doc = sa.func.to_tsvector(sa.literal_column("'simple'::regconfig"), doc)
        await conn.execute(
            sa.insert(chat_search).values(
                session_id=sa.bindparam("sid"),
                user_id=sa.bindparam("uid"),
                seq=sa.bindparam("seq"),
                document=doc,
            ),
            entries,
        )
    async with database.write() as conn:
        await conn.exec_driver_sql("ANALYZE")


async def search_user_42(database: Database) -> tuple[search_queries.SearchQuery, list[Any], str]:
    """user-42's search for "report topic2" as the service runs it: the search, its rows, and
    the plan of its main statement."""
    where = SessionFilter(user_id="user-42", archived=False)
    async with captured_statements(database.engine) as statements, database.read() as conn:
        search = search_queries.SearchQuery(query_words("report topic2"), where)
        rows = await search_queries.search_session_summaries(conn, search, limit=50)
    [(statement, parameters)] = [s for s in statements if "ORDER BY" in s[0]]
    postgres = database.engine.dialect.name == "postgresql"
    async with database.read() as conn:
        explain = "EXPLAIN" if postgres else "EXPLAIN QUERY PLAN"
        result = await conn.exec_driver_sql(f"{explain} {statement}", parameters)
        plan = "\n".join(str(row[0] if postgres else row[-1]) for row in result)
    return search, rows, plan


async def test_a_one_user_search_reads_through_an_index(backend: str, fresh_url: str) -> None:
    """PostgreSQL reads the user's own matches from the index of owned words, never the plain
    GIN index (whose scan reads everyone's matches); SQLite runs the FTS5 MATCH and looks
    entries up by key."""
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        await fill_for_plan(database)
        _, rows, plan = await search_user_42(database)

    assert sorted(row["session_id"] for row in rows) == sorted(
        f"u42-s{n}" for n in range(PLAN_SESSIONS_PER_USER)
    )
    if backend == "postgresql":
        assert re.search(r"Bitmap Index Scan on idx_chat_search_owned", plan), plan
        # Neither everyone's matches nor all of the user's entries.
        assert "idx_chat_search_document" not in plan, plan
        assert "idx_chat_search_user" not in plan, plan
        assert "Seq Scan on chat_search" not in plan, plan
    else:
        assert f"SCAN {FTS_TABLE} VIRTUAL TABLE INDEX" in plan, plan
        assert re.search(r"SEARCH chat_search USING INTEGER PRIMARY KEY", plan), plan
        assert not re.search(r"SCAN chat_search\b(?!_fts)", plan), plan


def _users_sharing_an_owner_key() -> tuple[str, str]:
    """Two user ids with the same owner key (32 bits: a pair turns up within about 100,000
    ids, in a fraction of a second)."""
    seen: dict[str, str] = {}
    for n in itertools.count():
        user_id = f"user-{n}"
        key = owner_key(user_id)
        if key in seen:
            return seen[key], user_id
        seen[key] = user_id
    raise AssertionError("unreachable")


async def test_users_sharing_an_owner_key_find_only_their_own_sessions(fresh_url: str) -> None:
    """The owner key is a short hash, so two users can share one: each still finds only their
    own sessions, because the search compares user_id too."""
    first, second = _users_sharing_an_owner_key()
    assert owner_key(first) == owner_key(second)
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        for user_id, session_id in ((first, "first-s"), (second, "second-s")):
            await store_text(database, session_id, user_id, "Where is my parcel?")
        found_by = {user_id: await found(database, "parc", user_id) for user_id in (first, second)}
    assert found_by == {first: ["first-s"], second: ["second-s"]}


OWNER_IDS = ["alice", "user-42", "Ünïcödé 用户 🦊", 'it\'s \\ "quoted"', "x" * 300]


async def test_the_index_files_words_under_the_key_the_query_uses(
    backend: str, fresh_url: str
) -> None:
    """chat_search_owned_block_words (SQL, migration 0019) and owner_block_key (Python) agree,
    whatever the user id holds and in whichever block the entry is: a query naming the entry's
    block finds it, one naming only the blocks around it does not."""
    if backend != "postgresql":
        pytest.skip("owned words are PostgreSQL's")
    await upgrade(fresh_url)
    text = "ünï 用户 parcel"
    tokens = document(text).split(" ")
    size = 1 << OWNER_BLOCK_BITS
    places = [(0, 0), (size - 1, 0), (size, 1), (12 * size + 5, 12)]
    async with app_database(fresh_url) as database, database.read() as conn:
        for user_id in OWNER_IDS:
            for ordinal, block in places:
                lexemes, found_in_block, found_around = (
                    await conn.execute(
                        sa.text(
                            "SELECT tsvector_to_array(owned), "
                            "owned @@ CAST(:in_block AS tsquery), "
                            "owned @@ CAST(:around AS tsquery) "
                            "FROM (SELECT chat_search_owned_block_words(:user_id, :ordinal, "
                            "to_tsvector('simple', :text)) AS owned) AS indexed"
                        ),
                        {
                            "user_id": user_id,
                            "ordinal": ordinal,
                            "text": document(text),
                            "in_block": postgres_owned_tsquery(
                                ["用", "parc"], user_id, range(max(0, block - 1), block + 1)
                            ),
                            "around": postgres_owned_tsquery(
                                ["用", "parc"],
                                user_id,
                                [other for other in (1, block + 1, block + 2) if other != block],
                            ),
                        },
                    )
                ).one()
                key = owner_block_key(user_id, block)
                assert sorted(lexemes) == sorted(f"{key}{token}" for token in tokens), user_id
                assert found_in_block is True, (user_id, ordinal)
                # Block 1's key is no prefix of block 12's, nor the other way.
                assert found_around is False, (user_id, ordinal)


# sqlite_stat1 as ANALYZE would write it for 11M search entries of a million light users
# (about ten entries each): statistics that make idx_chat_search_user look selective. Without
# the unary plus in app/search/queries.py the planner then drives the search from that index.
AT_SCALE_STATS = {
    "idx_chat_search_user": "11052998 10",
    "sqlite_autoindex_chat_search_1": "11052998 11 1",
}


async def test_sqlite_keeps_the_fts_match_outermost_with_statistics_at_scale(
    backend: str, fresh_url: str
) -> None:
    """With a large data set's statistics SQLite's planner would drive the search from the
    user's entries and rerun the whole FTS5 MATCH once per entry (55 s at 260k entries): the
    query must keep the MATCH as the outer loop whatever the statistics say."""
    if backend != "sqlite":
        pytest.skip("SQLite's planner and FTS5")
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        await fill_for_plan(database)
        async with database.write() as conn:
            for index, stat in AT_SCALE_STATS.items():
                updated = await conn.execute(
                    sa.text(
                        "UPDATE sqlite_stat1 SET stat = :stat "
                        "WHERE tbl = 'chat_search' AND idx = :idx"
                    ),
                    {"stat": stat, "idx": index},
                )
                assert updated.rowcount == 1, index
    # A new engine: SQLite reads sqlite_stat1 when a connection opens.
    async with app_database(fresh_url) as database:
        _, rows, plan = await search_user_42(database)

    assert len(rows) == PLAN_SESSIONS_PER_USER
    assert "idx_chat_search_user" not in plan, plan
    assert f"SCAN {FTS_TABLE} VIRTUAL TABLE INDEX" in plan, plan
