"""A database that is overloaded (no free pooled connection, too many connections), starting
or down is answered 503 with `Retry-After` and a readable JSON body, never a 500."""

import asyncio
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy.exc
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.kit.db.engine import Database
from app.kit.db.unavailable import DETAIL, RETRY_AFTER_SECONDS, unavailable_reason
from app.main import create_app
from tests.api.helpers import (
    CHAT,
    SESSIONS,
    STREAM,
    ScriptedAssistant,
    count_rows,
    open_stream,
    resumed,
    send,
    stored_messages,
    use_assistant,
)
from tests.conftest import POSTGRES_ADMIN_URL, LiveServer, make_settings, serve
from tests.outage import hold_every_connection, small_pool_settings

# What each of these routes is sent while the database cannot serve it.
REQUESTS = [
    pytest.param("POST", CHAT, {"message": "hello"}, id="chat"),
    pytest.param("POST", STREAM, {"message": "hello"}, id="stream"),
    pytest.param("GET", SESSIONS, None, id="list"),
]


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"detail"}
    assert "database" in response.json()["detail"]


def _refusals(reason: str) -> float:
    value = REGISTRY.get_sample_value("chat_db_unavailable_total", {"reason": reason})
    return value or 0.0


@asynccontextmanager
async def _small_pool_server(migrated_url: str) -> AsyncIterator[LiveServer]:
    async with serve(create_app(small_pool_settings(migrated_url))) as live:
        yield live


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
async def test_an_exhausted_pool_is_answered_503_and_nothing_is_written(
    migrated_url: str, database: Database, method: str, path: str, body: dict[str, str] | None
) -> None:
    async with _small_pool_server(migrated_url) as live:
        app_database: Database = live.app.state.database
        before = _refusals("pool_timeout")
        async with AsyncExitStack() as held:
            await hold_every_connection(app_database, held)

            response = await live.client.request(method, path, json=body)

            _assert_unavailable(response)
            assert _refusals("pool_timeout") == before + 1
        assert await count_rows(database) == (0, 0)

        # The connections are back: the same request succeeds.
        response = await live.client.request(method, path, json=body)
        assert response.status_code == 200, response.text
        await live.app.state.reply_tasks.wait_idle()


async def test_an_exhausted_pool_is_logged_as_a_warning_without_a_traceback(
    migrated_url: str, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async with _small_pool_server(migrated_url) as live:
        async with AsyncExitStack() as held:
            await hold_every_connection(live.app.state.database, held)
            with caplog.at_level("WARNING", logger="app.kit.http.request_context"):
                response = await live.client.post(CHAT, json={"message": "hello"})
        assert response.status_code == 503
        [record] = [r for r in caplog.records if r.name == "app.kit.http.request_context"]
        assert record.levelname == "WARNING"
        assert "pool_timeout" in record.getMessage()
        assert record.exc_info is None
        await send(live.client, "hello again")
        await live.app.state.reply_tasks.wait_idle()


async def test_a_stream_that_cannot_save_its_reply_ends_with_an_error_event(
    migrated_url: str, database: Database
) -> None:
    """Once the stream has started it is too late for a 503: its `error` event says why."""
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["Hel", "lo"], gate=gate)
    async with _small_pool_server(migrated_url) as live, AsyncExitStack() as held:
        with use_assistant(live, assistant):
            async with open_stream(live, {"message": "hello"}) as stream:
                await stream.read_until("delta")
                before = _refusals("pool_timeout")
                await hold_every_connection(live.app.state.database, held)
                gate.set()
                [*_, end] = await stream.read_until("error")
            assert end.data == {"detail": DETAIL}
            await held.aclose()
            await live.app.state.reply_tasks.wait_idle()
            assert _refusals("pool_timeout") == before + 1


async def test_a_reply_whose_end_could_not_be_saved_answers_its_key_once_saved(
    migrated_url: str, database: Database
) -> None:
    """Its end is written again by the next heartbeat: a request sent again with its key
    then gets the stored reply, where until then it would get a 409 (still generating)."""
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["Hello ", "there"], gate=gate, hold_reply=True)
    body = {"message": "hello", "session_id": "s"}
    key = {"Idempotency-Key": "k"}
    async with _small_pool_server(migrated_url) as live, AsyncExitStack() as held:
        with use_assistant(live, assistant):
            first = asyncio.create_task(live.client.post(CHAT, json=body, headers=key))
            await assistant.asked.wait()
            await hold_every_connection(live.app.state.database, held)
            gate.set()
            _assert_unavailable(await first)
            await held.aclose()
            generating = await live.client.post(CHAT, json=body, headers=key)
            assert generating.status_code == 409, generating.text

            await live.app.state.liveness.beat()

            again = await live.client.post(CHAT, json=body, headers=key)
    assert again.status_code == 200, again.text
    assert again.json()["response"] == "Hello there"
    [question, reply] = await stored_messages(database, "s")
    assert again.json()["message_id"] == str(reply["id"])
    assert again.json()["user_message_id"] == str(question["id"])
    assert (reply["content"], reply["metadata"]["status"]) == ("Hello there", "complete")


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same-process", "other-process"])
async def test_a_stream_resumed_after_its_end_could_not_be_saved_ends_once_saved(
    migrated_url: str, database: Database, elsewhere: bool
) -> None:
    """Resumed through the process that generates the reply, or through another one on the
    same database (another replica: it learns the end over the bus, or from the database)."""
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["Hel", "lo"], gate=gate)
    async with (
        _small_pool_server(migrated_url) as live,
        _small_pool_server(migrated_url) as other,
        AsyncExitStack() as held,
    ):
        with use_assistant(live, assistant):
            async with open_stream(live, {"message": "hello", "session_id": "s"}) as stream:
                await assistant.asked.wait()
                await hold_every_connection(live.app.state.database, held)
                gate.set()
                [*_, end] = await stream.read_until("error")
            assert end.data == {"detail": DETAIL}
            await live.app.state.reply_tasks.wait_idle()
            await held.aclose()
            # Generating still: the reader follows it until it ends.
            async with resumed(other if elsewhere else live, "s") as reader:
                [started] = await reader.read_until("session")

                await live.app.state.liveness.beat()

                [*_, done] = await reader.read_until("done")
    assert done.data == {
        "session_id": "s",
        "message_id": started.data["message_id"],
        "status": "complete",
    }
    assert reader.text == "Hello"
    [_, reply] = await stored_messages(database, "s")
    assert (reply["content"], reply["metadata"]["status"]) == ("Hello", "complete")


@asynccontextmanager
async def _role(database_url: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A role of its own with the service's privileges on the test database: the URL of
    `database_url` as that role, and an administrator's connection to change its limits."""
    role = f"chat_limited_{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    url = make_url(database_url)
    admin = await asyncpg.connect(
        make_url(POSTGRES_ADMIN_URL).set(database=url.database).render_as_string(False)
    )
    try:
        await admin.execute(
            f"CREATE ROLE {role} LOGIN PASSWORD '{password}';"
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};"
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"
        )
        yield url.set(username=role, password=password).render_as_string(False), admin
    finally:
        await admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        )
        await admin.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        await admin.close()


async def test_postgresql_refusing_connections_is_answered_503(
    backend: str, migrated_url: str, database: Database
) -> None:
    if backend != "postgresql":
        pytest.skip("a connection limit is PostgreSQL's")
    async with _role(migrated_url) as (url, admin):
        role = make_url(url).username
        async with serve(create_app(make_settings(url))) as live:
            # The pool's connections are closed, and the role may open no more: PostgreSQL
            # refuses it as it refuses connections past max_connections (SQLSTATE 53300).
            # The connection the app listens on (messages between processes) stays open.
            await live.app.state.database.engine.dispose()
            await admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")
            before = _refusals("too_many_connections")

            response = await live.client.post(CHAT, json={"message": "hello"})

            _assert_unavailable(response)
            assert _refusals("too_many_connections") == before + 1
            assert await count_rows(database) == (0, 0)

            await admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
            await send(live.client, "hello again")
            await live.app.state.reply_tasks.wait_idle()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_postgresql_server_that_is_down_is_unreachable() -> None:
    engine = create_async_engine(f"postgresql+asyncpg://chat:x@127.0.0.1:{_closed_port()}/chat")
    try:
        with pytest.raises(ConnectionRefusedError) as raised:
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    assert unavailable_reason(raised.value) == "unreachable"


async def test_a_locked_sqlite_database_is_an_overload(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0})
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked") as raised:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
        holder.close()
    assert unavailable_reason(raised.value) == "locked"


async def test_postgresql_undoing_one_of_two_crossed_writes_is_a_busy_database(
    backend: str, migrated_url: str
) -> None:
    """A deadlock, and a snapshot's row changed under it (REPEATABLE READ), are answered as a
    busy database (503, retry), not as a bug (500): the same request again succeeds."""
    if backend != "postgresql":
        pytest.skip("SQLite's writes take turns")
    engine = create_async_engine(make_settings(migrated_url).database_url)
    table = f"crossed_{uuid.uuid4().hex[:8]}"
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)"))
            await conn.execute(text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))

        async def cross(first: int, second: int, both_locked: asyncio.Barrier) -> None:
            async with engine.begin() as conn:
                await conn.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
                await conn.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = {first}"))
                await both_locked.wait()
                await conn.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = {second}"))

        barrier = asyncio.Barrier(2)
        outcomes = await asyncio.gather(
            cross(1, 2, barrier), cross(2, 1, barrier), return_exceptions=True
        )
        [deadlock] = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert unavailable_reason(deadlock) == "deadlock", deadlock

        reader = await engine.connect()
        try:
            snapshot = await reader.execution_options(isolation_level="REPEATABLE READ")
            await snapshot.begin()
            await snapshot.execute(text(f"SELECT n FROM {table} WHERE id = 1"))
            async with engine.begin() as conn:
                await conn.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = 1"))
            with pytest.raises(sqlalchemy.exc.DBAPIError) as raised:
                await snapshot.execute(text(f"UPDATE {table} SET n = 0 WHERE id = 1"))
            assert unavailable_reason(raised.value) == "serialization"
            await snapshot.rollback()
        finally:
            await reader.close()
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()


def test_other_errors_are_not_unavailability() -> None:
    assert unavailable_reason(ValueError("no")) is None
    assert unavailable_reason(OSError("a file, not the database")) is None
    assert unavailable_reason(sqlite3.OperationalError("no such table: t")) is None
