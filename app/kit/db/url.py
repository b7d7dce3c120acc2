"""Turn the database URLs people paste (Supabase, psql, SQLite paths) into async driver URLs."""

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2"}
_SQLITE_SCHEMES = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}

# libpq spells TLS as `sslmode=require`; asyncpg takes the same values under `ssl`.
_LIBPQ_ONLY_PARAMS = {"sslmode": "ssl"}


def normalize_database_url(raw: str) -> str:
    """Return an equivalent URL that names the async driver (asyncpg or aiosqlite)."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        # Not the parser's words, which may quote the URL and so its password.
        raise ValueError(
            "not a database URL: expected "
            "postgresql://user:password@host:port/database or sqlite:///path"
        ) from None
    if url.drivername in _POSTGRES_SCHEMES:
        query = dict(url.query)
        for libpq_name, asyncpg_name in _LIBPQ_ONLY_PARAMS.items():
            if libpq_name in query:
                query.setdefault(asyncpg_name, query.pop(libpq_name))
        url = url.set(drivername="postgresql+asyncpg", query=query)
    elif url.drivername in _SQLITE_SCHEMES:
        url = url.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(
            f"unsupported DATABASE_URL scheme {url.drivername!r}: use postgresql:// or sqlite://"
        )
    return url.render_as_string(hide_password=False)


def ensure_sqlite_directory(database_url: str) -> None:
    """Create the folder of a SQLite database file, so a fresh checkout runs as is."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
