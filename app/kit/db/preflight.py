"""Check at start-up that the database can be used, and say in one line what is wrong if not.

Without it a wrong DATABASE_URL or a database that is down showed as a 200-line traceback from
deep inside the driver, once the server had started. The check opens one connection and a
write transaction (which on SQLite needs a writable file and folder), then closes them.
"""

import socket
import sqlite3
from collections.abc import Iterator

import asyncpg
from sqlalchemy.engine import URL, make_url

from app.config import Settings
from app.kit.db.engine import Database, create_engine
from app.kit.db.url import ensure_sqlite_directory


class DatabaseUnavailable(Exception):
    """The database cannot be used; the message names the problem and what to do."""


async def check_database(settings: Settings) -> None:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        _check_sqlite(settings.database_url, url)
        return
    try:
        database = Database(create_engine(settings))
    except OSError as exc:  # creating a SQLite database's folder
        raise DatabaseUnavailable(explain(exc, url)) from exc
    try:
        async with database.write():
            pass
    except Exception as exc:
        raise DatabaseUnavailable(explain(exc, url)) from exc
    finally:
        await database.dispose()


def _check_sqlite(database_url: str, url: URL) -> None:
    """The same check through the standard library's driver: aiosqlite's worker thread
    reports a failed connect after `asyncio.run` has closed the loop, and under load that
    printed a thread's traceback below the one line."""
    try:
        ensure_sqlite_directory(database_url)
        connection = sqlite3.connect(url.database or ":memory:", isolation_level=None)
        try:
            # What the engine does first on each connection (app/kit/db/engine.py), then a
            # write transaction: both need a writable file and folder.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseUnavailable(explain(exc, url)) from exc


def explain(exc: BaseException, url: URL) -> str:
    """One line for why `url` could not be used; never the password."""
    causes = list(_chain(exc))
    if url.get_backend_name() == "sqlite":
        return _explain_sqlite(causes, url)
    server = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"
    for cause in causes:
        match cause:
            case asyncpg.InvalidCatalogNameError():
                return (
                    f'database "{url.database}" does not exist on {server}: create it '
                    f"(createdb {url.database}), or correct the database name in DATABASE_URL"
                )
            case asyncpg.InvalidPasswordError():
                return (
                    f'password authentication failed for user "{url.username}" on {server}: '
                    "correct the user name and password in DATABASE_URL"
                )
            case asyncpg.InvalidAuthorizationSpecificationError():
                return (
                    f'{server} refused user "{url.username}" ({_first_line(cause)}): correct '
                    "the user name in DATABASE_URL, or allow it in the server's pg_hba.conf"
                )
            case asyncpg.PostgresError():
                return f"{server} refused the connection: {_first_line(cause)}"
            case socket.gaierror():
                return (
                    f"cannot resolve the database host {url.host!r}: correct the host name in "
                    "DATABASE_URL"
                )
            case TimeoutError():
                return (
                    f"{server} did not answer in time: check the host and port in DATABASE_URL, "
                    "and any firewall in between"
                )
            case OSError():
                return (
                    f"cannot connect to {server} ({_first_line(cause)}): is PostgreSQL running "
                    "there, and are the host and port in DATABASE_URL right?"
                )
    return _unexplained(causes, url)


def _explain_sqlite(causes: list[BaseException], url: URL) -> str:
    path = url.database or ""
    for cause in causes:
        if isinstance(cause, OSError) or (
            isinstance(cause, sqlite3.OperationalError) and "unable to open" in str(cause)
        ):
            return (
                f"cannot create or open the SQLite database {path} ({_first_line(cause)}): "
                "its folder must exist or be creatable, and be writable by this user; or set "
                "DATABASE_URL to another path"
            )
        if isinstance(cause, sqlite3.OperationalError) and "readonly" in str(cause):
            return (
                f"the SQLite database {path} is read-only ({_first_line(cause)}): make the file "
                "and its folder writable by this user"
            )
    return _unexplained(causes, url)


def _unexplained(causes: list[BaseException], url: URL) -> str:
    root = causes[-1]
    return (
        f"cannot use the database {url.render_as_string(hide_password=True)}: "
        f"{type(root).__name__}: {_first_line(root)}"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what caused it, outermost first: SQLAlchemy's wrapper, its DB-API adapter's
    error, the driver's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        original = getattr(current, "orig", None)
        current = (
            original
            if isinstance(original, BaseException) and id(original) not in seen
            else current.__cause__ or current.__context__
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
