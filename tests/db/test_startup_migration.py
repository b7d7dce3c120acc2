"""MIGRATE_ON_STARTUP: the application's lifespan brings a database to the head revision."""

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.access import Caller
from app.kit.db.types import utc_now
from app.main import create_app
from app.sessions import queries as session_queries
from app.sessions.service import get_sessions_list
from tests.conftest import make_settings
from tests.db.helpers import alembic_versions, head_revision, table_names

OPEN = Caller.open_mode()


async def start_and_stop(url: str, *, migrate_on_startup: bool) -> None:
    app = create_app(make_settings(url, migrate_on_startup=migrate_on_startup))
    async with app.router.lifespan_context(app):
        if migrate_on_startup:
            # The application is usable at once: its own engine sees the schema.
            page = await get_sessions_list(
                app.state.database, OPEN, page=1, page_size=5, user_id=None
            )
            assert page.total is not None
            assert page.total >= 0


async def test_startup_migrates_a_fresh_database(fresh_url: str, fresh_engine: AsyncEngine) -> None:
    await start_and_stop(fresh_url, migrate_on_startup=True)

    async with fresh_engine.connect() as conn:
        assert {"chat_sessions", "chat_messages", "alembic_version"} <= await table_names(conn)
        assert await alembic_versions(conn) == [head_revision()]


async def test_second_startup_is_a_no_op(fresh_url: str, fresh_engine: AsyncEngine) -> None:
    app = create_app(make_settings(fresh_url, migrate_on_startup=True))
    async with app.router.lifespan_context(app), app.state.database.write() as conn:
        await session_queries.create_session_if_absent(
            conn, session_id="kept", user_id=None, now=utc_now()
        )

    await start_and_stop(fresh_url, migrate_on_startup=True)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [head_revision()]
        sessions = await conn.execute(sa.text("SELECT session_id FROM chat_sessions"))
        assert list(sessions.scalars()) == ["kept"]


async def test_no_migration_when_disabled(fresh_url: str, fresh_engine: AsyncEngine) -> None:
    await start_and_stop(fresh_url, migrate_on_startup=False)

    async with fresh_engine.connect() as conn:
        assert await table_names(conn) == set()
