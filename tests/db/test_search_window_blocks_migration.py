"""Revision 0019_search_window_blocks: PostgreSQL indexes each entry's words under its owner's
key and its block of entry ids; a user's ranking window is read through it. The index covers
entries written before it, is built without blocking writes (a run interrupted at any step
runs again), and goes on downgrade; SQLite is left as it was. The SQL function and the
Python that names the blocks agree."""

import re

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.search import fulltext
from app.search import queries as search_queries
from app.search.fulltext import document, entry_block, owner_key, postgres_block_tsquery
from app.sessions.queries import SessionFilter
from tests.db.helpers import (
    PREFIX_INDEX_REVISION,
    WINDOW_BLOCKS_REVISION,
    app_database,
    captured_statements,
    down_revision_of,
    index_definitions,
    leave_an_invalid_index,
    upgrade,
)
from tests.db.helpers import downgrade as downgrade_to
from tests.db.seed import T0, SeedMessage, SeedSession
from tests.db.test_search_migration import (
    OWNER_IDS,
    fill_for_plan,
    found,
    seed_at_sidebar_revision,
)

INDEX = "idx_chat_search_owned_blocks"
FUNCTION = "chat_search_block_words"
SEED = tuple(
    SeedSession(f"s-{n}", f"user-{n % 2}", T0, (SeedMessage(1, "user", f"Payment plan {n}", T0),))
    for n in range(6)
)


def test_it_follows_the_previous_head() -> None:
    assert down_revision_of(WINDOW_BLOCKS_REVISION) == PREFIX_INDEX_REVISION


def test_a_window_names_the_blocks_it_spans_if_they_are_few() -> None:
    block = 2**fulltext.ENTRY_BLOCK_BITS
    window = search_queries.RankingWindow
    # The window is the entries after `since`, up to `newest`.
    assert window(since=block - 1, newest=block).blocks == range(1, 2)
    assert window(since=block - 2, newest=block).blocks == range(0, 2)
    assert window(since=5, newest=3 * block + 7).blocks == range(0, 4)
    most = fulltext.MAX_WINDOW_BLOCKS
    assert window(since=0, newest=most * block - 1).blocks == range(0, most)
    assert window(since=0, newest=most * block).blocks is None


async def is_valid(engine: AsyncEngine) -> bool | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT i.indisvalid FROM pg_index i"
                    " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :index"
                ),
                {"index": INDEX},
            )
        ).first()
    return None if row is None else bool(row.indisvalid)


async def has_function(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        found_rows = await conn.execute(
            sa.text("SELECT count(*) FROM pg_proc WHERE proname = :name"), {"name": FUNCTION}
        )
        return bool(found_rows.scalar_one())


async def test_upgrade_indexes_existing_entries_and_downgrade_removes_the_index(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_at_sidebar_revision(fresh_url, fresh_engine, SEED)
    await upgrade(fresh_url, PREFIX_INDEX_REVISION)
    async with fresh_engine.connect() as conn:
        before = await index_definitions(conn, "chat_search")

    await upgrade(fresh_url, WINDOW_BLOCKS_REVISION)

    async with fresh_engine.connect() as conn:
        after = await index_definitions(conn, "chat_search")
    if backend == "sqlite":
        assert after == before
        return
    assert set(after) == set(before) | {INDEX}
    assert await is_valid(fresh_engine) is True
    # A window of one entry: each user's searches read it by its block.
    monkeypatch.setattr(search_queries, "RANKING_WINDOW_ENTRIES", 1)
    async with app_database(fresh_url) as database:
        async with captured_statements(database.engine) as statements:
            results = await found(database, "payment", "user-1")
        assert any(FUNCTION in sql for sql, _ in statements)
        # The newest match (in the window) first, then the older ones.
        assert results == ["s-5", "s-3", "s-1"]

    await downgrade_to(fresh_url, PREFIX_INDEX_REVISION)

    async with fresh_engine.connect() as conn:
        assert await index_definitions(conn, "chat_search") == before
    assert not await has_function(fresh_engine)


@pytest.mark.parametrize("left", ["invalid build", "function only"])
async def test_an_interrupted_upgrade_runs_again(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine, left: str
) -> None:
    if backend != "postgresql":
        pytest.skip("nothing is built on SQLite")
    await seed_at_sidebar_revision(fresh_url, fresh_engine, SEED)
    await upgrade(fresh_url, PREFIX_INDEX_REVISION)
    if left == "invalid build":
        await leave_an_invalid_index(fresh_engine, INDEX)
        assert await is_valid(fresh_engine) is False
    else:
        async with fresh_engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(
                f"CREATE FUNCTION {FUNCTION}(owner text, entry bigint, document tsvector) "
                "RETURNS tsvector LANGUAGE sql IMMUTABLE AS $$ SELECT document $$"
            )

    await upgrade(fresh_url, WINDOW_BLOCKS_REVISION)

    assert await is_valid(fresh_engine) is True
    async with fresh_engine.connect() as conn:
        definition = (await index_definitions(conn, "chat_search"))[INDEX]
        assert f"gin ({FUNCTION}(user_id, id, document))" in definition
        # The function is the migration's, whatever an earlier run left.
        [lexeme] = (
            await conn.execute(
                sa.text(f"SELECT tsvector_to_array({FUNCTION}('u', 1, 'word'::tsvector))")
            )
        ).scalar_one()
        assert lexeme == f"{owner_key('u')}0.word"


async def test_the_index_files_words_under_the_key_and_block_the_query_uses(
    backend: str, fresh_url: str
) -> None:
    """chat_search_block_words (SQL) and entry_block and postgres_block_tsquery (Python)
    agree, whatever the user id holds, at the edges of blocks too."""
    if backend != "postgresql":
        pytest.skip("the blocks are PostgreSQL's")
    await upgrade(fresh_url)
    text = "ünï 用户 parcel"
    block = 2**fulltext.ENTRY_BLOCK_BITS
    entry_ids = [1, block - 1, block, 7 * block + 3, 2**40 + 5]
    async with app_database(fresh_url) as database, database.read() as conn:
        for user_id in OWNER_IDS:
            for entry_id in entry_ids:
                lexemes, matches, elsewhere = (
                    await conn.execute(
                        sa.text(
                            "SELECT tsvector_to_array(words), "
                            "words @@ CAST(:query AS tsquery), words @@ CAST(:other AS tsquery) "
                            f"FROM (SELECT {FUNCTION}(:user_id, :entry_id, "
                            "to_tsvector('simple', :text)) AS words) AS indexed"
                        ),
                        {
                            "user_id": user_id,
                            "entry_id": entry_id,
                            "text": document(text),
                            "query": postgres_block_tsquery(
                                ["用", "parc"],
                                user_id,
                                range(entry_block(entry_id), entry_block(entry_id) + 1),
                            ),
                            "other": postgres_block_tsquery(
                                ["parc"],
                                user_id,
                                range(entry_block(entry_id) + 1, entry_block(entry_id) + 3),
                            ),
                        },
                    )
                ).one()
                key = f"{owner_key(user_id)}{entry_block(entry_id)}."
                tokens = document(text).split(" ")
                assert sorted(lexemes) == sorted(f"{key}{token}" for token in tokens), user_id
                assert (matches, elsewhere) == (True, False), (user_id, entry_id)


async def test_a_windowed_search_reads_the_blocks_index_only(
    backend: str, fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window's statement reads its matches from the blocks' index: not all of the user's
    matches (the owned words), nor the window's range of the user's entries, nor the table."""
    if backend != "postgresql":
        pytest.skip("the blocks are PostgreSQL's")
    monkeypatch.setattr(search_queries, "RANKING_WINDOW_ENTRIES", 5)
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        await fill_for_plan(database)
        where = SessionFilter(user_id="user-42", archived=False)
        search = search_queries.SearchQuery(fulltext.query_words("report topic2"), where)
        async with captured_statements(database.engine) as statements, database.read() as conn:
            window = await search_queries.ranking_window(conn, "user-42")
            assert window is not None
            rows = await search_queries.search_session_summaries(
                conn, search, limit=50, tier="recent", window=window
            )
        [(statement, parameters)] = [s for s in statements if FUNCTION in s[0]]
        async with database.read() as conn:
            result = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plan = "\n".join(str(row[0]) for row in result)

    assert len(rows) >= 2
    assert re.search(rf"Bitmap Index Scan on {INDEX}\b", plan), plan
    assert not re.search(r"idx_chat_search_owned\b(?!_blocks)", plan), plan
    assert "idx_chat_search_user" not in plan, plan
    assert "idx_chat_search_document" not in plan, plan
    assert "Seq Scan on chat_search" not in plan, plan
