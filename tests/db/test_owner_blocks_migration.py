"""Revision 0019_search_owner_blocks on both databases: every entry with an owner is numbered
among its owner's entries in the order of their ids (0, 1, …), existing ones by the upgrade (in
batches on PostgreSQL, writes going on) and later ones by the database's trigger, concurrent
writers of one user included; PostgreSQL's owned words are indexed in blocks of those numbers
in place of 0005's index; searches find what they found. Downgrade removes it all."""

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.kit.db import migrate
from app.kit.db.types import utc_now
from app.search import index as search_index
from app.search.fulltext import OWNER_BLOCK_BITS
from app.sessions import queries as session_queries
from tests.db.helpers import (
    OWNER_BLOCKS_REVISION,
    PREFIX_INDEX_REVISION,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    column_names,
    down_revision_of,
    index_names,
    leave_an_invalid_index,
    store_text,
    upgrade,
)
from tests.db.helpers import downgrade as downgrade_to
from tests.db.test_search_migration import (
    assert_sqlite_index_consistent,
    found,
    seed_at_sidebar_revision,
)
from tests.db.test_search_prefix_migration import SEARCHES, SEED

NEW_INDEX = "idx_chat_search_owned_blocks"
OLD_INDEX = "idx_chat_search_owned"


def test_it_follows_the_previous_head() -> None:
    assert down_revision_of(OWNER_BLOCKS_REVISION) == PREFIX_INDEX_REVISION


def batch_rows(url: str) -> int:
    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    rows = script.get_revision(OWNER_BLOCKS_REVISION).module.BATCH_ROWS
    assert isinstance(rows, int)
    return rows


async def numbering(conn: AsyncConnection) -> dict[str | None, list[int | None]]:
    """Each owner's entries' numbers, in the order of their ids."""
    rows = await conn.execute(sa.text("SELECT user_id, user_ordinal FROM chat_search ORDER BY id"))
    numbers: dict[str | None, list[int | None]] = defaultdict(list)
    for user_id, ordinal in rows:
        numbers[user_id].append(ordinal)
    return dict(numbers)


async def assert_numbered_in_order(
    engine: AsyncEngine, *, start: int = 0
) -> dict[str | None, list[int | None]]:
    """Every owner's entries are numbered `start`, `start` + 1, … in the order of their ids;
    those without an owner are not numbered."""
    async with engine.connect() as conn:
        numbers = await numbering(conn)
    for user_id, ordinals in numbers.items():
        if user_id is None:
            assert set(ordinals) == {None}
        else:
            assert ordinals == list(range(start, start + len(ordinals))), user_id
    return numbers


async def insert_entries(conn: AsyncConnection, entries: list[tuple[str, str | None, int]]) -> None:
    """Search entries (session, owner, seq) written as a version before 0019 writes them, with
    the word `filler`."""
    document = (
        "to_tsvector('simple', 'filler')" if conn.dialect.name == "postgresql" else "'filler'"
    )
    await conn.execute(
        sa.text(
            "INSERT INTO chat_search (session_id, user_id, seq, document) "
            f"VALUES (:session_id, :user_id, :seq, {document})"
        ),
        [{"session_id": s, "user_id": u, "seq": q} for s, u, q in entries],
    )


async def at_previous_revision(url: str, engine: AsyncEngine) -> None:
    """SEED at 0018, with entries of two users and of no user interleaved after it."""
    await seed_at_sidebar_revision(url, engine, SEED)
    await upgrade(url, PREFIX_INDEX_REVISION)
    async with app_database(url) as database:
        await store_text(database, "nobody", None, "A session without an owner")
    async with engine.begin() as conn:
        await insert_entries(
            conn,
            [
                ("refund", "ann", 10),
                ("other-refund", "bob", 10),
                ("nobody", None, 10),
                ("refund", "ann", 11),
                ("other-refund", "bob", 11),
            ],
        )


async def test_upgrade_numbers_each_owners_entries_and_downgrade_removes_them(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await at_previous_revision(fresh_url, fresh_engine)

    await upgrade(fresh_url, OWNER_BLOCKS_REVISION)

    numbers = await assert_numbered_in_order(fresh_engine)
    assert {"ann", "bob", None} <= set(numbers)
    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [OWNER_BLOCKS_REVISION]
        if backend == "postgresql":
            indexes = await index_names(conn, "chat_search")
            assert NEW_INDEX in indexes
            assert OLD_INDEX not in indexes
        await assert_sqlite_index_consistent(conn)
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
    assert {(q, user): sorted(await found_by(fresh_url, q, user)) for q, user in SEARCHES} == (
        SEARCHES
    )
    # The next entry of a user is numbered after their newest, by the database.
    async with app_database(fresh_url) as database:
        await store_text(database, "receipt", "ann", "Remboursement")
    after = await assert_numbered_in_order(fresh_engine)
    assert len(after["ann"]) == len(numbers["ann"]) + 1
    assert sorted(await found_by(fresh_url, "rem", "ann")) == ["receipt"]

    await downgrade_to(fresh_url, PREFIX_INDEX_REVISION)

    async with fresh_engine.connect() as conn:
        assert "user_ordinal" not in await column_names(conn, "chat_search")
        await assert_sqlite_index_consistent(conn)
        if backend == "postgresql":
            indexes = await index_names(conn, "chat_search")
            assert OLD_INDEX in indexes
            assert NEW_INDEX not in indexes
            leftovers = await conn.execute(
                sa.text(
                    "SELECT proname FROM pg_proc WHERE proname IN "
                    "('chat_search_number_entry', 'chat_search_owned_block_words')"
                )
            )
            assert list(leftovers.scalars()) == []
    # Written back at 0018 (no trigger numbers it), then up again: numbered with the rest.
    async with fresh_engine.begin() as conn:
        await insert_entries(conn, [("refund", "ann", 12)])
        await assert_sqlite_index_consistent(conn)
    await upgrade(fresh_url)
    again = await assert_numbered_in_order(fresh_engine)
    assert len(again["ann"]) == len(after["ann"]) + 1
    assert sorted(await found_by(fresh_url, "rem", "ann")) == ["receipt"]


async def found_by(url: str, q: str, user_id: str | None) -> list[str]:
    async with app_database(url) as database:
        return await found(database, q, user_id)


async def bulk_sessions(engine: AsyncEngine, owners: list[str], entries_each: int) -> None:
    """A session per owner with `entries_each` entries, the owners' entries interleaved by id,
    some deleted (their numbers are not kept: the rest close up)."""
    async with engine.begin() as conn:
        for owner in owners:
            await conn.execute(
                sa.text(
                    "INSERT INTO chat_sessions (id, session_id, user_id, active, metadata, "
                    "created_at, updated_at) VALUES (gen_random_uuid(), :owner, :owner, true, "
                    "'{}', now(), now())"
                ),
                {"owner": owner},
            )
        await conn.execute(
            sa.text(
                "INSERT INTO chat_search (session_id, user_id, seq, document) "
                "SELECT o.owner, o.owner, g, to_tsvector('simple', 'filler ' || g) "
                "FROM generate_series(1, :entries) g CROSS JOIN unnest(CAST(:owners AS text[])) "
                "AS o(owner) ORDER BY g, o.owner"
            ),
            {"entries": entries_each, "owners": owners},
        )
        await conn.execute(sa.text("DELETE FROM chat_search WHERE seq % 7 = 3"))


async def test_entries_past_one_batch_are_all_numbered(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite's upgrade numbers every entry in one statement")
    await seed_at_sidebar_revision(fresh_url, fresh_engine, SEED)
    await upgrade(fresh_url, PREFIX_INDEX_REVISION)
    # Three owners over two and a half batches: batches end in the middle of an owner's.
    await bulk_sessions(fresh_engine, ["u-a", "u-b", "u-c"], batch_rows(fresh_url) * 5 // 6)

    await upgrade(fresh_url)

    numbers = await assert_numbered_in_order(fresh_engine)
    assert len(numbers["u-b"]) > batch_rows(fresh_url) // 2
    async with app_database(fresh_url) as database:
        assert await found(database, "filler", "u-b") == ["u-b"]


@contextlib.asynccontextmanager
async def writing_meanwhile(engine: AsyncEngine, owners: list[str]) -> AsyncIterator[None]:
    """Entries of `owners` written one transaction at a time as a version before 0019 writes
    them (the trigger numbers them once it exists), while the block runs."""
    stop = asyncio.Event()

    async def write() -> None:
        seq = 1_000_000
        while not stop.is_set():
            seq += 1
            async with engine.begin() as conn:
                await insert_entries(conn, [(owner, owner, seq) for owner in owners])
            await asyncio.sleep(0)

    writer = asyncio.create_task(write())
    try:
        yield
    finally:
        stop.set()
        await writer


async def test_entries_written_during_the_upgrade_are_numbered_in_order(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite's upgrade holds writes off")
    await seed_at_sidebar_revision(fresh_url, fresh_engine, SEED)
    await upgrade(fresh_url, PREFIX_INDEX_REVISION)
    await bulk_sessions(fresh_engine, ["u-a", "u-b"], batch_rows(fresh_url))
    async with fresh_engine.connect() as conn:
        query = "SELECT count(*) FROM chat_search WHERE user_id = 'u-a'"
        before = (await conn.execute(sa.text(query))).scalar_one()

    async with writing_meanwhile(fresh_engine, ["u-a", "u-b"]):
        await upgrade(fresh_url)

    numbers = await assert_numbered_in_order(fresh_engine)
    # Some were written while it ran (before the trigger and after).
    assert len(numbers["u-a"]) > before


async def test_concurrent_writes_of_one_user_are_numbered_in_the_order_of_their_ids(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    """Transactions writing entries of one user at once, each held open after its first: each
    entry is numbered after the newest committed before it, in the order of the ids."""
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        await store_text(database, "busy", "busy-user", "First words")
    postgres = backend == "postgresql"

    async def writer(n: int) -> None:
        async with fresh_engine.begin() as conn:
            await insert_entries(conn, [("busy", "busy-user", 100 + 2 * n)])
            if postgres:
                await conn.execute(sa.text("SELECT pg_sleep(0.05)"))
            await insert_entries(conn, [("busy", "busy-user", 101 + 2 * n)])

    if postgres:
        await asyncio.gather(*(writer(n) for n in range(8)))
    else:
        for n in range(8):
            await writer(n)

    numbers = await assert_numbered_in_order(fresh_engine)
    assert len(numbers["busy-user"]) == 16 + 2


async def test_an_interrupted_upgrade_runs_again(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    """What a run stopped in the middle leaves: the column, part of the numbers, and an
    invalid index from a failed concurrent build. The next run completes it."""
    if backend != "postgresql":
        pytest.skip("SQLite's upgrade is one transaction")
    await at_previous_revision(fresh_url, fresh_engine)
    async with fresh_engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE chat_search ADD COLUMN user_ordinal BIGINT"))
        await conn.execute(
            sa.text(
                "UPDATE chat_search SET user_ordinal = 7 WHERE seq = 10 AND user_id IS NOT NULL"
            )
        )
    await leave_an_invalid_index(fresh_engine, NEW_INDEX)

    await upgrade(fresh_url)

    await assert_numbered_in_order(fresh_engine)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
    async with app_database(fresh_url) as database:
        assert sorted(await found(database, "filler", "ann")) == ["refund"]


async def test_two_tabs_of_a_user_are_numbered_in_order_on_a_repeatable_read_server(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    """The trigger reads the owner's newest entry once it has its turn, which only a snapshot
    per statement (READ COMMITTED) shows. On a server whose default is REPEATABLE READ, a
    writer whose transaction began before two others of the same user committed would number
    its entry after what it saw, behind theirs: the newest entry's block would no longer be
    the last, and a search would not read theirs. The service's writes run at READ COMMITTED
    whatever the server's default."""
    if backend != "postgresql":
        pytest.skip("SQLite writes one transaction at a time")
    await upgrade(fresh_url)
    async with fresh_engine.begin() as conn:
        name = (await conn.execute(sa.text("SELECT current_database()"))).scalar_one()
        default = "default_transaction_isolation = 'repeatable read'"
        await conn.execute(sa.text(f'ALTER DATABASE "{name}" SET {default}'))
    user = "two-tabs"
    began, committed = asyncio.Event(), asyncio.Event()

    async with app_database(fresh_url) as database:
        await store_text(database, "first", user, "First words")
        async with database.write() as conn:
            for session_id in ("alpha", "zulu", "late"):
                await session_queries.create_session_if_absent(
                    conn, session_id=session_id, user_id=user, now=utc_now()
                )
            # As if 16,381 entries of theirs came before: the next two end block 0 and start
            # block 1.
            await conn.execute(
                sa.text("UPDATE chat_search SET user_ordinal = user_ordinal + :before"),
                {"before": (1 << OWNER_BLOCK_BITS) - 3},
            )

        async def late_tab() -> None:
            # Its transaction reads the database first, then writes its entry once two other
            # tabs' entries are committed.
            async with database.write() as conn:
                await session_queries.create_session_if_absent(
                    conn, session_id="late", user_id=user, now=utc_now()
                )
                began.set()
                await committed.wait()
                await search_index.index_text(conn, "late", user, 1, "Late words")

        async def other_tabs() -> None:
            await began.wait()
            for session_id in ("alpha", "zulu"):
                async with database.write() as conn:
                    await search_index.index_text(conn, session_id, user, 1, f"{session_id} words")
            committed.set()

        await asyncio.gather(late_tab(), other_tabs())

        assert await found(database, "zulu", user) == ["zulu"]
    numbers = await assert_numbered_in_order(fresh_engine, start=(1 << OWNER_BLOCK_BITS) - 3)
    assert len(numbers[user]) == 5
