"""Revision 0018_search_prefix_index on both databases: SQLite's FTS5 table is built again
with prefix indexes (an owner's key and a word's first 2 and 3 letters), consistent with
chat_search and kept in step by the triggers; searches find what they found, short prefixes
and pairs of Chinese characters included. Downgrade restores the table without them.
PostgreSQL: nothing changes, and searches find the same."""

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.messages import service as message_service
from app.search.fulltext import FTS_TABLE
from tests.db.helpers import (
    IDEMPOTENCY_REVISION,
    PREFIX_INDEX_REVISION,
    alembic_versions,
    app_database,
    down_revision_of,
    upgrade,
)
from tests.db.helpers import downgrade as downgrade_to
from tests.db.seed import T0, SeedMessage, SeedSession
from tests.db.test_search_migration import (
    assert_sqlite_index_consistent,
    found,
    seed_at_sidebar_revision,
)

SEED = (
    SeedSession("refund", "ann", T0, (SeedMessage(1, "user", "Refund my card", T0),)),
    SeedSession("receipt", "ann", T0, (SeedMessage(1, "user", "Où est le reçu ?", T0),)),
    SeedSession("payment", "ann", T0, (SeedMessage(1, "user", "Payment failed", T0),)),
    SeedSession("other-refund", "bob", T0, (SeedMessage(1, "user", "Refund please", T0),)),
    SeedSession("tokyo", "ann", T0, (SeedMessage(1, "user", "我住在東京都", T0),)),
)
# (query, user) -> what it finds, before, after and after downgrading: prefixes of 1, 2, 3
# and 4 letters (those of 2 and 3 read the prefix indexes), a pair and a run of Chinese.
SEARCHES = {
    ("r", "ann"): ["receipt", "refund"],
    ("re", "ann"): ["receipt", "refund"],
    ("ref", "ann"): ["refund"],
    ("refu", "ann"): ["refund"],
    ("re", "bob"): ["other-refund"],
    ("RE", None): ["other-refund", "receipt", "refund"],
    ("東京", "ann"): ["tokyo"],
    ("東京都", "ann"): ["tokyo"],
    ("pa ca", "ann"): [],
}


def test_it_follows_the_previous_head() -> None:
    assert down_revision_of(PREFIX_INDEX_REVISION) == IDEMPOTENCY_REVISION


async def fts_definition(conn: AsyncConnection) -> str | None:
    if conn.dialect.name != "sqlite":
        return None
    definition = await conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE name = :name"), {"name": FTS_TABLE}
    )
    return str(definition.scalar_one())


async def searches(url: str) -> dict[tuple[str, str | None], list[str]]:
    async with app_database(url) as database:
        return {(q, user): sorted(await found(database, q, user)) for q, user in SEARCHES}


async def test_upgrade_adds_prefix_indexes_and_downgrade_removes_them(
    backend: str, fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await seed_at_sidebar_revision(fresh_url, fresh_engine, SEED)
    await upgrade(fresh_url, IDEMPOTENCY_REVISION)
    async with fresh_engine.connect() as conn:
        before = await fts_definition(conn)

    await upgrade(fresh_url, PREFIX_INDEX_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [PREFIX_INDEX_REVISION]
        after = await fts_definition(conn)
        # FTS5's integrity check compares the prefix indexes with the documents too.
        await assert_sqlite_index_consistent(conn)
    if backend == "sqlite":
        assert before is not None
        assert after is not None
        assert "prefix" not in before
        assert after == before.removesuffix(")") + ", prefix='11 12')"
    else:
        assert after is None
    # The service's search reads the head's schema.
    await upgrade(fresh_url)
    assert await searches(fresh_url) == SEARCHES

    # The triggers keep the new table in step: a message written now is found by its prefix.
    async with app_database(fresh_url) as database:
        await message_service.save_message(
            database, session_id="payment", role="user", content="Remboursement", metadata={}
        )
        assert sorted(await found(database, "re", "ann")) == ["payment", "receipt", "refund"]
    async with fresh_engine.connect() as conn:
        await assert_sqlite_index_consistent(conn)

    await downgrade_to(fresh_url, IDEMPOTENCY_REVISION)

    async with fresh_engine.connect() as conn:
        assert await fts_definition(conn) == before
        await assert_sqlite_index_consistent(conn)
    # And up again: the message written at the head is still found.
    await upgrade(fresh_url)
    async with app_database(fresh_url) as database:
        assert sorted(await found(database, "rem", "ann")) == ["payment"]
