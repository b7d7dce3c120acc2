"""Revision 0015_search_folding on both databases: every entry written before it is rewritten
with folded words and pairs of characters (found by the new rules), in batches; downgrade
restores the index of 0004's rules."""

from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.db import migrate
from app.search import legacy
from tests.db.helpers import (
    FOLDERS_TAGS_REVISION,
    IMPORTS_REVISION,
    SEARCH_FOLDING_REVISION,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    down_revision_of,
    upgrade,
)
from tests.db.helpers import downgrade as downgrade_to
from tests.db.seed import T0, SeedMessage, SeedSession
from tests.db.test_search_migration import (
    assert_sqlite_index_consistent,
    expected_entries,
    found,
    seed_at_sidebar_revision,
    stored_entries,
)

MULTILINGUAL_SEED = (
    SeedSession(
        "tokyo",
        "dana",
        T0,
        (
            SeedMessage(1, "user", "\u6211\u4f4f\u5728\u6771\u4eac\u90fd", T0),
            SeedMessage(2, "assistant", "Un caf\u00e9 dans la Stra\u00dfe", T0),
        ),
    ),
    SeedSession(
        "thai",
        "erin",
        T0,
        (
            SeedMessage(1, "user", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22", T0),
            SeedMessage(2, "assistant", "\u03a3\u039f\u03a6\u0399\u0391", T0),
        ),
    ),
    SeedSession("plain", None, T0, (SeedMessage(1, "user", "Deploying Kubernetes", T0),)),
)


def legacy_words(_dialect: str, _user_id: str | None, text: str) -> str:
    return legacy.document(text)


def test_it_follows_the_previous_head() -> None:
    assert down_revision_of(SEARCH_FOLDING_REVISION) == IMPORTS_REVISION


async def test_upgrade_rewrites_every_entry_and_downgrade_restores_the_old_ones(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_sidebar_revision(fresh_url, fresh_engine, MULTILINGUAL_SEED)
    await upgrade(fresh_url, FOLDERS_TAGS_REVISION)
    async with fresh_engine.connect() as conn:
        old = await stored_entries(conn)
        assert old == await expected_entries(conn, legacy_words)

    # A separate run: on PostgreSQL the batches commit on a connection of their own.
    await upgrade(fresh_url, SEARCH_FOLDING_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [SEARCH_FOLDING_REVISION]
        assert await stored_entries(conn) == await expected_entries(conn)
        await assert_sqlite_index_consistent(conn)
    # app.kit.db.tables is the head's schema: later revisions add tables of their own.
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)
    async with app_database(fresh_url) as database:
        for q, user_id, expected in [
            ("\u6771\u4eac", "dana", ["tokyo"]),
            ("\u6771\u4eac", None, ["tokyo"]),
            ("\u4eac\u90fd", "erin", []),
            ("cafe strasse", "dana", ["tokyo"]),
            ("\u0e44\u0e17\u0e22", "erin", ["thai"]),
            ("\u03c3\u03bf\u03c6\u03b9\u03b1", "erin", ["thai"]),
            ("kube", None, ["plain"]),
        ]:
            assert await found(database, q, user_id) == expected, q

    await downgrade_to(fresh_url, FOLDERS_TAGS_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [FOLDERS_TAGS_REVISION]
        assert await stored_entries(conn) == old
        await assert_sqlite_index_consistent(conn)


async def test_entries_past_one_batch_are_all_rewritten(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(fresh_url))
    batch = script.get_revision(SEARCH_FOLDING_REVISION).module._BATCH
    assert isinstance(batch, int)
    # A title and a message each: batch + 2 sessions make two batches and a bit more.
    seed = tuple(
        SeedSession(
            f"s-{n:05d}", f"user-{n % 5}", T0, (SeedMessage(1, "user", f"Caf\u00e9 n{n}", T0),)
        )
        for n in range(batch // 2 + 3)
    )
    await seed_at_sidebar_revision(fresh_url, fresh_engine, seed)
    await upgrade(fresh_url, FOLDERS_TAGS_REVISION)

    await upgrade(fresh_url, SEARCH_FOLDING_REVISION)

    async with fresh_engine.connect() as conn:
        stored = await stored_entries(conn)
        assert stored == await expected_entries(conn)
    assert len(stored) == 2 * len(seed)
    # The service's search reads the head's schema.
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        last = len(seed) - 1
        assert await found(database, f"cafe n{last}", f"user-{last % 5}") == [f"s-{last:05d}"]
