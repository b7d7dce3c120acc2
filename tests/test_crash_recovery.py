"""A process killed mid-reply (SIGKILL) leaves the reply in the database as far as it was saved,
marked as generating; the next process to start, or another one already running on the same
database, finishes it as incomplete with error "interrupted".

The real service runs as a subprocess (`python -m app`), on SQLite and on PostgreSQL, against
the fake upstream, which sends the first chunk and holds the rest, so the reply is
deterministically mid-stream when the process is killed. A killed process tells nothing, so
the database is polled, bounded, for what the service writes in the background.
"""

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import STREAM
from tests.conftest import BACKENDS, DatabaseFactory
from tests.fakes.openai_server import Respond
from tests.service_process import (
    CHUNKS,
    IO_TIMEOUT,
    GatedFakeOpenAI,
    Service,
    exit_code_of,
    fake_upstream,
    next_event,
    remaining_events,
    run_service,
    run_services,
    sse_events,
    stored,
    upstream_env,
)

# Every delta saved at once (no batching), and dead processes found within a second or so.
FAST_RECOVERY = {
    "REPLY_SAVE_INTERVAL_MS": "0",
    "PROCESS_HEARTBEAT_SECONDS": "0.2",
    "PROCESS_STALE_SECONDS": "1",
}
# How long the database is polled for a background write (far more than it takes).
POLL_TIMEOUT = 20.0


async def poll_reply(
    database_url: str,
    session_id: str,
    until: Callable[[dict[str, Any]], bool],
    *,
    alive: Service | None = None,
) -> dict[str, Any]:
    """The session's reply (its second message) once `until` holds, polled, bounded."""
    deadline = time.monotonic() + POLL_TIMEOUT
    reply: dict[str, Any] | None = None
    while True:
        messages = await stored(database_url, session_id)
        reply = messages[1] if len(messages) > 1 else None
        if reply is not None and until(reply):
            return reply
        if alive is not None and alive.process.returncode is not None:
            pytest.fail(f"the service exited:\n{alive.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the reply never got there: {reply}")
        await asyncio.sleep(0.05)


def generating_with_first_chunk(reply: dict[str, Any]) -> bool:
    return bool(reply["metadata"]["status"] == "generating" and reply["content"] == CHUNKS[0])


def interrupted(reply: dict[str, Any]) -> bool:
    return bool(reply["metadata"]["status"] != "generating")


async def kill_mid_stream(
    service: Service, database_url: str, then: Callable[[str], Awaitable[None]]
) -> str:
    """Stream a reply on `service`, SIGKILL it once the first chunk is saved, then `then`;
    the session's id."""
    async with (
        httpx.AsyncClient(base_url=service.base_url, timeout=IO_TIMEOUT) as client,
        client.stream("POST", STREAM, json={"message": "Tell me something"}) as response,
    ):
        events = sse_events(response)
        started = await next_event(events)
        assert started.event == "session", started
        assert (await next_event(events)).event == "delta"
        session_id: str = started.data["session_id"]
        saved = await poll_reply(database_url, session_id, generating_with_first_chunk)
        assert saved["metadata"]["status"] == "generating"

        service.process.kill()
        assert await exit_code_of(service.process, within=IO_TIMEOUT) == -signal.SIGKILL
    await then(session_id)
    return session_id


def assert_finished_as_interrupted(reply: dict[str, Any]) -> None:
    assert reply["content"] == CHUNKS[0]
    assert reply["metadata"]["status"] == "incomplete"
    assert reply["metadata"]["error"] == "interrupted"
    assert reply["metadata"]["finish_reason"] == "error"
    assert reply["metadata"]["provider"] == "openai"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_reply_cut_by_a_crash_is_kept_and_finished_at_the_next_start(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    database_url = await database_factory.create_migrated(backend)
    fake = GatedFakeOpenAI(default=Respond(chunks=CHUNKS))
    # Batching on (the default interval) would be as good here; the stale bound is long, so
    # only the restart on the same host can tell at once that the process is dead.
    env = {"REPLY_SAVE_INTERVAL_MS": "0", "PROCESS_STALE_SECONDS": "3600"}
    try:
        async with fake_upstream(fake) as upstream_url:

            async def still_generating(session_id: str) -> None:
                [_, reply] = await stored(database_url, session_id)
                assert generating_with_first_chunk(reply), reply

            async with run_service(
                tmp_path, database_url, upstream_env(upstream_url, 5, **env)
            ) as first:
                session_id = await kill_mid_stream(first, database_url, still_generating)

            async with (
                run_service(
                    tmp_path, database_url, upstream_env(upstream_url, 5, **env)
                ) as restarted,
                httpx.AsyncClient(base_url=restarted.base_url) as client,
            ):
                reply = await poll_reply(database_url, session_id, interrupted, alive=restarted)
                session = (await client.get(f"/api/v1/chat/sessions/{session_id}")).json()
    finally:
        fake.gate.set()

    assert_finished_as_interrupted(reply)
    # The history reads as it happened: the question, then what came of the answer.
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "Tell me something"),
        ("assistant", CHUNKS[0]),
    ]
    assert session["message_count"] == 2
    assert session["last_message"] == CHUNKS[0].strip()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_replica_finishes_the_reply_of_a_replica_that_crashed(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    database_url = await database_factory.create_migrated(backend)
    fake = GatedFakeOpenAI(default=Respond(chunks=CHUNKS))
    try:
        async with (
            fake_upstream(fake) as upstream_url,
            run_services(
                tmp_path, database_url, upstream_env(upstream_url, 5, **FAST_RECOVERY)
            ) as (crashing, survivor),
        ):
            finished: dict[str, Any] = {}

            async def finished_by_survivor(session_id: str) -> None:
                finished.update(
                    await poll_reply(database_url, session_id, interrupted, alive=survivor)
                )

            await kill_mid_stream(crashing, database_url, finished_by_survivor)
            # Nothing restarted: the replica that kept running finished it.
            assert survivor.process.returncode is None
    finally:
        fake.gate.set()

    assert_finished_as_interrupted(finished)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_readers_on_another_replica_get_done_when_the_producer_dies(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """A client that resumed its stream on another replica gets the rest of what was saved and
    `done` (`incomplete`) once that replica's sweep finishes the reply of the dead one."""
    database_url = await database_factory.create_migrated(backend)
    fake = GatedFakeOpenAI(default=Respond(chunks=CHUNKS))
    # Few connections each: the test PostgreSQL is shared.
    env = {**FAST_RECOVERY, "DATABASE_POOL_SIZE": "3"}
    try:
        async with (
            fake_upstream(fake) as upstream_url,
            run_services(tmp_path, database_url, upstream_env(upstream_url, 5, **env)) as (
                crashing,
                survivor,
            ),
            httpx.AsyncClient(base_url=crashing.base_url, timeout=IO_TIMEOUT) as client,
            client.stream("POST", STREAM, json={"message": "Tell me something"}) as response,
        ):
            events = sse_events(response)
            started = await next_event(events)
            first = await next_event(events)
            session_id = started.data["session_id"]
            await poll_reply(database_url, session_id, generating_with_first_chunk)
            async with (
                httpx.AsyncClient(base_url=survivor.base_url, timeout=IO_TIMEOUT) as reader,
                reader.stream(
                    "GET",
                    f"/api/v1/chat/sessions/{session_id}/stream",
                    headers={"Last-Event-ID": str(first.id)},
                ) as resumed,
            ):
                assert resumed.status_code == 200
                crashing.process.kill()
                rest = [event async for event in remaining_events(sse_events(resumed))]
            reply = await poll_reply(database_url, session_id, interrupted, alive=survivor)
    finally:
        fake.gate.set()

    assert_finished_as_interrupted(reply)
    assert [e.event for e in rest] == ["done"]
    assert rest[-1].data == {
        "session_id": session_id,
        "message_id": str(reply["id"]),
        "status": "incomplete",
    }
    assert first.data["content"] == reply["content"]
