"""Database URLs as people paste them, turned into async driver URLs."""

import re
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from app.config import Settings
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.kit.db.url import normalize_database_url
from tests.conftest import DatabaseFactory, make_settings

TRICKY_PASSWORD = "p@ss:w/rd%#?&= ü"


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (
            "postgresql://user:pw@host:5432/db",
            "postgresql+asyncpg://user:pw@host:5432/db",
        ),
        ("postgres://user:pw@host:5432/db", "postgresql+asyncpg://user:pw@host:5432/db"),
        ("postgresql+asyncpg://user:pw@host/db", "postgresql+asyncpg://user:pw@host/db"),
        ("postgresql+psycopg2://user:pw@host/db", "postgresql+asyncpg://user:pw@host/db"),
        (
            "postgresql://user:pw@host:5432/db?sslmode=require",
            "postgresql+asyncpg://user:pw@host:5432/db?ssl=require",
        ),
        ("  postgresql://user:pw@host/db\n", "postgresql+asyncpg://user:pw@host/db"),
        ("sqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
        ("sqlite:////abs/path/x.db", "sqlite+aiosqlite:////abs/path/x.db"),
        ("sqlite+aiosqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_normalize_database_url(raw: str, normalized: str) -> None:
    assert normalize_database_url(raw) == normalized


def test_normalizing_twice_changes_nothing() -> None:
    once = normalize_database_url("postgres://u:pw@h:6543/db?sslmode=require")
    assert normalize_database_url(once) == once


def test_sslmode_does_not_override_an_explicit_ssl() -> None:
    url = make_url(normalize_database_url("postgresql://u@h/db?sslmode=disable&ssl=require"))
    assert dict(url.query) == {"ssl": "require"}


def test_percent_encoded_password_survives() -> None:
    raw = f"postgresql://user:{quote(TRICKY_PASSWORD, safe='')}@host:5432/db"
    url = make_url(normalize_database_url(raw))
    assert url.password == TRICKY_PASSWORD
    assert (url.username, url.host, url.port, url.database) == ("user", "host", 5432, "db")


def test_password_survives_the_alembic_config() -> None:
    """The URL goes through ConfigParser (where % is special) on its way to migrations/env.py."""
    raw = f"postgresql://user:{quote(TRICKY_PASSWORD, safe='')}@host:5432/db"
    config = migrate.alembic_config(normalize_database_url(raw))
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    assert make_url(normalize_database_url(url)).password == TRICKY_PASSWORD


@pytest.mark.parametrize(
    "raw", ["mysql://user:pw@host/db", "mssql+pyodbc://host/db", "postgresql+psycopg://h/db"]
)
def test_unsupported_scheme_is_refused_readably(raw: str) -> None:
    scheme = raw.split("://")[0]
    message = re.escape(f"unsupported DATABASE_URL scheme '{scheme}'")
    with pytest.raises(ValueError, match=message) as info:
        normalize_database_url(raw)
    assert "postgresql://" in str(info.value)
    assert "sqlite://" in str(info.value)


def test_settings_normalize_the_database_url() -> None:
    settings = Settings(_env_file=None, database_url="postgres://u:pw@h:5432/db?sslmode=require")
    assert settings.database_url == "postgresql+asyncpg://u:pw@h:5432/db?ssl=require"


def test_settings_refuse_an_unsupported_database_url() -> None:
    with pytest.raises(ValueError, match="unsupported DATABASE_URL scheme"):
        Settings(_env_file=None, database_url="mysql://u@h/db")


async def test_plain_postgresql_url_connects(database_factory: DatabaseFactory) -> None:
    """A `postgresql://` URL as Supabase hands it out works without editing."""
    raw = await database_factory.create("postgresql")
    assert make_url(raw).drivername == "postgresql"
    database = Database(create_engine(make_settings(raw)))
    try:
        await database.ping()
        async with database.read() as conn:
            assert conn.dialect.driver == "asyncpg"
    finally:
        await database.dispose()
