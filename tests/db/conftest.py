"""Fixtures of the database tests: a fresh, empty database per test."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import DatabaseFactory, make_settings
from tests.db.helpers import plain_engine


@pytest.fixture
async def fresh_url(backend: str, database_factory: DatabaseFactory) -> str:
    """The normalized (async driver) URL of a new empty database on `backend`."""
    return make_settings(await database_factory.create(backend)).database_url


@pytest.fixture
async def fresh_engine(fresh_url: str) -> AsyncIterator[AsyncEngine]:
    """A plain engine on `fresh_url` (no pool), for looking at the database from outside."""
    engine = plain_engine(fresh_url)
    yield engine
    await engine.dispose()
