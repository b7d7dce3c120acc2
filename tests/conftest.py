"""Shared fixtures: every test that takes `backend` runs on SQLite and on PostgreSQL, each in a
database of its own created for this test run and migrated with Alembic."""

import asyncio
import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.main import create_app

BACKENDS = ["sqlite", "postgresql"]
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Admin connections dropping the run's databases at the end (the test PostgreSQL is shared).
DROPS_AT_ONCE = 8


class DatabaseFactory:
    """Creates fresh databases for one test run and drops them at the end."""

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._postgres_databases: list[str] = []
        # One database per backend migrated to head, copied for every migrated database.
        self._templates: dict[str, str] = {}
        self._template_lock = asyncio.Lock()

    async def create(self, backend: str, *, template: str | None = None) -> str:
        """The URL of a new database on `backend`: empty (no tables), or a copy of the
        database at the URL `template` (which no one may be connected to)."""
        name = f"chat_test_{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            path = self._tmp_dir / f"{name}.db"
            if template is not None:
                await asyncio.to_thread(_copy_sqlite, Path(make_url(template).database or ""), path)
            return f"sqlite:///{path}"
        copy = "" if template is None else f' TEMPLATE "{make_url(template).database}"'
        admin = await self._connect_admin()
        try:
            await admin.execute(f'CREATE DATABASE "{name}"{copy}')
        finally:
            await admin.close()
        self._postgres_databases.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)

    async def create_migrated(self, backend: str) -> str:
        """The URL of a new database on `backend` with every migration applied: a copy of one
        migrated once for the run (migrating takes 2 to 3 s here, a copy a tenth of that)."""
        async with self._template_lock:
            if backend not in self._templates:
                template = await self.create(backend)
                # Alembic's engine is disposed when it returns: nothing stays connected.
                await migrate.upgrade_async(make_settings(template).database_url)
                self._templates[backend] = template
        return await self.create(backend, template=self._templates[backend])

    async def drop_all(self) -> None:
        """Drop the run's PostgreSQL databases, several at once: each DROP DATABASE waits for a
        checkpoint, and drops waiting together share one (on a loaded machine, 8 drops took
        21 s one after another, 2.1 s at once; one by one, a full run ended with 105 s here)."""
        names = list(self._postgres_databases)

        async def drop_some() -> None:
            admin = await self._connect_admin()
            try:
                while names:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{names.pop()}" WITH (FORCE)')
            finally:
                await admin.close()

        await asyncio.gather(*(drop_some() for _ in range(min(DROPS_AT_ONCE, len(names)))))

    @staticmethod
    async def _connect_admin() -> asyncpg.Connection:
        try:
            return await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {exc!r}"
            if IN_CI:
                pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
            pytest.skip(message)


def _copy_sqlite(source: Path, target: Path) -> None:
    """SQLite's online backup: whole, whatever the journal mode left beside the file."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@pytest.fixture(scope="session")
async def database_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"))
    yield factory
    await factory.drop_all()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test app: nothing read from `.env`, no start-up migration, no delays."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "migrate_on_startup": False,
        "assistant_provider": "echo",
        "assistant_stream_delay_ms": 0,
        "shutdown_grace_seconds": 10,
        # Test apps sweep once, at start-up: a live server's sweep every few seconds would
        # race with the tests of the sweep (tests/services/test_reply_lifecycle.py).
        "process_heartbeat_seconds": 3600,
        "process_stale_seconds": 7201,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
async def migrated_url(backend: str, database_factory: DatabaseFactory) -> str:
    """A database on `backend` with every migration applied, shared by the session."""
    return await database_factory.create_migrated(backend)


@pytest.fixture(scope="session")
def settings(migrated_url: str) -> Settings:
    return make_settings(migrated_url)


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(create_engine(settings))
    yield db
    await db.dispose()


@pytest.fixture(autouse=True)
async def _empty_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Each test starts from empty tables (the schema stays)."""
    yield
    if "database" not in request.fixturenames:
        return
    db: Database = request.getfixturevalue("database")
    async with db.write() as conn:
        await conn.execute(text("DELETE FROM chat_replies_generating"))
        await conn.execute(text("DELETE FROM chat_import_sources"))
        await conn.execute(text("DELETE FROM chat_imports"))
        await conn.execute(text("DELETE FROM chat_feedback"))
        await conn.execute(text("DELETE FROM chat_messages"))
        await conn.execute(text("DELETE FROM chat_sessions"))
        await conn.execute(text("DELETE FROM chat_tags"))
        await conn.execute(text("DELETE FROM chat_folders"))
        # A live server's own row comes back with its next heartbeat.
        await conn.execute(text("DELETE FROM chat_processes"))


@dataclass
class LiveServer:
    """The real app served by uvicorn on a loopback port, and an HTTP client for it."""

    app: FastAPI
    server: uvicorn.Server
    client: httpx.AsyncClient
    base_url: str


KEEPALIVE_EXPIRY_SECONDS = 1.0


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@asynccontextmanager
async def serve(app: FastAPI, **config: Any) -> AsyncIterator[LiveServer]:
    """Serve `app` (lifespan included) with uvicorn on a free loopback port until exit;
    `config`: more options of `uvicorn.Config`."""
    sock = _listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    base_url = f"http://127.0.0.1:{port}"
    try:
        # The socket listens already, so this waits for start-up without polling.
        # Idle connections are dropped by the client well before uvicorn closes them
        # (`timeout_keep_alive`, 5 s, httpx's default expiry too): at equal times a request
        # could go out on a connection the server was closing (httpx.ReadError, seen once).
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
            (await client.get("/healthz")).raise_for_status()
            yield LiveServer(app=app, server=server, client=client, base_url=base_url)
    finally:
        server.should_exit = True
        await serving
        sock.close()


@pytest.fixture(scope="session")
async def live_server(settings: Settings, database: Database) -> AsyncIterator[LiveServer]:
    """The app in open mode (no authentication), as `make run` serves it by default."""
    async with serve(create_app(settings)) as live:
        yield live


@pytest.fixture
async def client(live_server: LiveServer, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client of the live server; tables are emptied after each test."""
    yield live_server.client
    # Replies and imports still running would write into the next test's tables.
    await live_server.app.state.reply_tasks.wait_idle()
    await live_server.app.state.import_tasks.wait()
