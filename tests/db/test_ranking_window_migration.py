"""Revision 0016_search_ranking_window on both databases: idx_chat_search_user becomes
(user_id, id), searches find what they found; downgrade restores (user_id). On PostgreSQL the
index is built without blocking writes, and a run interrupted at any step runs again."""

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.helpers import (
    RANKING_WINDOW_REVISION,
    SEARCH_FOLDING_REVISION,
    alembic_versions,
    app_database,
    down_revision_of,
    index_definitions,
    index_keys,
    leave_an_invalid_index,
    upgrade,
)
from tests.db.helpers import downgrade as downgrade_to
from tests.db.seed import T0, SeedMessage, SeedSession
from tests.db.test_search_migration import found, seed_at_sidebar_revision

INDEX = "idx_chat_search_user"
BUILDING = "idx_chat_search_user_building"
CHAT_SEARCH_INDEXES = {
    "pk_chat_search",
    "uq_chat_search_session_seq",
    "idx_chat_search_document",
    "idx_chat_search_owned",
    INDEX,
}
SEED = tuple(
    SeedSession(f"s-{n}", f"user-{n % 2}", T0, (SeedMessage(1, "user", f"Payment plan {n}", T0),))
    for n in range(4)
)


def test_it_follows_the_previous_head() -> None:
    assert down_revision_of(RANKING_WINDOW_REVISION) == SEARCH_FOLDING_REVISION


async def key_columns(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return [name for name, _desc in await index_keys(conn, INDEX)]


async def test_upgrade_adds_id_to_the_users_index_and_downgrade_removes_it(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_sidebar_revision(fresh_url, fresh_engine, SEED)
    await upgrade(fresh_url, SEARCH_FOLDING_REVISION)
    assert await key_columns(fresh_engine) == ["user_id"]

    await upgrade(fresh_url, RANKING_WINDOW_REVISION)

    assert await key_columns(fresh_engine) == ["user_id", "id"]
    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [RANKING_WINDOW_REVISION]
    # The service's search reads the head's schema.
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        assert sorted(await found(database, "payment", "user-1")) == ["s-1", "s-3"]

    await downgrade_to(fresh_url, SEARCH_FOLDING_REVISION)

    assert await key_columns(fresh_engine) == ["user_id"]


@pytest.mark.parametrize("left", ["invalid build", "built, not renamed"])
async def test_an_interrupted_upgrade_runs_again(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine, left: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite's upgrade is one transaction")
    await seed_at_sidebar_revision(fresh_url, fresh_engine, SEED)
    await upgrade(fresh_url, SEARCH_FOLDING_REVISION)
    if left == "invalid build":
        await leave_an_invalid_index(fresh_engine, BUILDING)
    else:
        async with fresh_engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(
                f"CREATE INDEX CONCURRENTLY {BUILDING} ON chat_search (user_id, id)"
            )

    await upgrade(fresh_url, RANKING_WINDOW_REVISION)

    assert await key_columns(fresh_engine) == ["user_id", "id"]
    async with fresh_engine.connect() as conn:
        invalid = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
            " AND indrelid = 'chat_search'::regclass"
        )
        assert invalid.scalar_one() == 0
        assert set(await index_definitions(conn, "chat_search")) == CHAT_SEARCH_INDEXES
