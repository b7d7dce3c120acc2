"""A database that cannot serve an app for a while: every connection its pool may open is
held, so that its next checkout waits `POOL_TIMEOUT_SECONDS` and fails as under overload
(the 503 of app/kit/db/unavailable.py). The connections come back when the stack closes."""

from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.kit.db.engine import Database
from tests.conftest import make_settings

# Short, so that each refused checkout waits this long and no more.
POOL_TIMEOUT_SECONDS = 0.2


def small_pool_settings(database_url: str, **overrides: Any) -> Settings:
    """Test settings with a pool of one connection (PostgreSQL) and a short wait for it."""
    return make_settings(
        database_url,
        database_pool_size=1,
        database_pool_timeout_seconds=POOL_TIMEOUT_SECONDS,
        **overrides,
    )


async def hold_every_connection(database: Database, stack: AsyncExitStack) -> None:
    """Check out as many connections as the pool may open (its size and its overflow)."""
    pool = database.engine.pool
    limit = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
    for _ in range(limit):
        conn: AsyncConnection = await stack.enter_async_context(database.engine.connect())
        await conn.execute(text("SELECT 1"))
