"""DATABASE_READ_URL: the sidebar's list and search and the feedback export read the read
replica, and nothing else does; no write ever goes there. The "replica" is a second database
whose rows differ from the primary's (a real replica would not): what a request shows says
which one it read. On both databases."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.main import create_app
from app.messages.schemas import ChatRequest
from app.messages.service import process_chat
from app.replies.generation import ReplyTasks
from tests.api.helpers import SESSIONS, send, session_url
from tests.conftest import DatabaseFactory, LiveServer, make_settings, serve
from tests.db.helpers import down_revision_of, head_revision

MARKER = "Only on the replica"


@dataclass
class Replicated:
    server: LiveServer
    primary: Database
    replica: Database


async def row_counts(database: Database) -> dict[str, int]:
    async with database.read() as conn:
        return {
            table: int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())
            for table in ("chat_sessions", "chat_messages", "chat_feedback", "chat_folders")
        }


@pytest.fixture
async def replicated(backend: str, database_factory: DatabaseFactory) -> AsyncIterator[Replicated]:
    """The app on a primary and a "replica" database, both migrated; the replica holds one
    session of alice's that the primary does not."""
    primary_url = await database_factory.create_migrated(backend)
    replica_url = await database_factory.create_migrated(backend)
    settings = make_settings(primary_url, database_read_url=replica_url, metrics_enabled=True)
    primary = Database(create_engine(settings))
    replica = Database(create_engine(make_settings(replica_url)))
    await process_chat(
        replica,
        EchoAssistant(),
        Caller.open_mode(),
        ChatRequest(message=MARKER, user_id="alice", session_id="replica-only"),
        history_max_messages=10,
        tasks=ReplyTasks(),
    )
    try:
        async with serve(create_app(settings)) as server:
            yield Replicated(server, primary, replica)
    finally:
        await primary.dispose()
        await replica.dispose()


async def test_sidebar_reads_go_to_the_replica_and_writes_never_do(
    replicated: Replicated,
) -> None:
    client = replicated.server.client
    replica_before = await row_counts(replicated.replica)
    sent = await send(client, "Written to the primary", user_id="alice")
    session_id = sent["session_id"]
    rated = await client.put(
        f"{session_url(session_id)}/messages/{sent['message_id']}/feedback",
        json={"rating": "up"},
    )
    assert rated.status_code == 200, rated.text
    folder = await client.post("/api/v1/chat/folders", json={"name": "Work"})
    assert folder.status_code == 201, folder.text

    # The sidebar's list and search: the replica's sessions.
    listed = await client.get(SESSIONS, params={"user_id": "alice"})
    assert [s["session_id"] for s in listed.json()["sessions"]] == ["replica-only"]
    found = await client.get(SESSIONS, params={"user_id": "alice", "q": "replica"})
    assert [s["session_id"] for s in found.json()["sessions"]] == ["replica-only"]
    # The feedback export: the replica's (none).
    exported = await client.get("/api/v1/feedback")
    assert exported.status_code == 200, exported.text
    assert exported.json()["feedback"] == []
    # Everything else reads the primary: a session, its tree, the folders just created.
    assert (await client.get(session_url(session_id))).status_code == 200
    assert (await client.get(f"{session_url(session_id)}/tree")).status_code == 200
    assert (await client.get(session_url("replica-only"))).status_code == 404
    folders = await client.get("/api/v1/chat/folders")
    assert [f["name"] for f in folders.json()["folders"]] == ["Work"]

    # Each pool has its gauge.
    scraped = (await client.get("/metrics")).text
    assert 'chat_db_pool_connections{state="idle"}' in scraped
    assert 'chat_db_read_pool_connections{state="idle"}' in scraped

    # Nothing was written to the replica; everything to the primary.
    assert await row_counts(replicated.replica) == replica_before
    assert await row_counts(replicated.primary) == {
        "chat_sessions": 1,
        "chat_messages": 2,
        "chat_feedback": 1,
        "chat_folders": 1,
    }


async def test_readiness_checks_the_replica_too(
    backend: str, database_factory: DatabaseFactory
) -> None:
    primary_url = await database_factory.create(backend)
    replica_url = await database_factory.create(backend)
    settings = make_settings(primary_url, database_read_url=replica_url)
    await migrate.upgrade_async(settings.database_url)
    # A replica whose schema is behind this version's: not ready, and it says which.
    behind = down_revision_of(head_revision())
    await migrate.upgrade_async(settings.database_read_url, behind)
    async with serve(create_app(settings)) as server:
        response = await server.client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["detail"].startswith(
            f"Read replica (DATABASE_READ_URL) schema is at {behind}"
        )
        await migrate.upgrade_async(settings.database_read_url)
        assert (await server.client.get("/readyz")).status_code == 200


def test_the_replica_must_be_the_same_kind_of_database() -> None:
    with pytest.raises(ValidationError, match="DATABASE_READ_URL must be the same kind"):
        make_settings("sqlite:///./data/x.db", database_read_url="postgresql://h/db")
    assert make_settings("sqlite:///./data/x.db").database_read_url == ""
