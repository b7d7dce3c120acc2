"""Graceful shutdown: replies in flight at SIGTERM finish (up to SHUTDOWN_GRACE_SECONDS) and are
saved; a reply still running when the grace period ends is stopped and saved (error
"shutdown"), and its request still gets its answer: a stream its last event, a plain request a
503 in JSON, before uvicorn's own timeout would cut them.

The real service runs as a subprocess (`python -m app`, tests/service_process.py), as it is
deployed, on SQLite and on PostgreSQL, against a fake OpenAI-compatible upstream served in the
test's event loop. The fake holds the reply (a stream after its first chunk) until the test
releases it, so the reply is deterministically in flight when SIGTERM arrives.
"""

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.kit.errors import ShuttingDown
from tests.api.helpers import CHAT, STREAM, SseEvent
from tests.conftest import BACKENDS, DatabaseFactory
from tests.fakes.fixtures import FakeUpstream
from tests.fakes.openai_server import Respond
from tests.service_process import (
    CHUNKS,
    IO_TIMEOUT,
    GatedFakeOpenAI,
    exit_code_of,
    fake_upstream,
    next_event,
    remaining_events,
    run_service,
    sse_events,
    stored,
    upstream_env,
    wait_refusing_connections,
)


@dataclass
class Shutdown:
    """What one SIGTERM mid-stream came to."""

    started: SseEvent  # the `session` event
    rest: list[SseEvent]  # the events after the first `delta`
    exit_code: int
    elapsed: float  # seconds from SIGTERM to the process's exit
    output: str  # the service's log


async def sigterm_mid_stream(
    tmp_path: Path, database_url: str, *, grace: float, release: bool
) -> Shutdown:
    """Stream a reply, send SIGTERM after its first chunk, then release the rest of the upstream
    reply once the service has begun shutting down (`release`) or never."""
    fake = GatedFakeOpenAI(default=Respond(chunks=CHUNKS))
    try:
        async with (
            fake_upstream(fake) as upstream_url,
            run_service(tmp_path, database_url, upstream_env(upstream_url, grace)) as service,
            httpx.AsyncClient(base_url=service.base_url, timeout=IO_TIMEOUT) as client,
            client.stream("POST", STREAM, json={"message": "Tell me something"}) as response,
        ):
            assert response.status_code == 200
            events = sse_events(response)
            started = await next_event(events)
            assert started.event == "session", started
            first = await next_event(events)
            assert first.event == "delta", first
            assert first.data == {"content": CHUNKS[0]}

            # The reply is mid-stream (the fake holds the rest): ask the service to stop.
            service.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            rest: list[SseEvent] = []
            if release:
                await wait_refusing_connections(service.base_url)
                assert service.process.returncode is None, "it exited with a stream in flight"
                fake.gate.set()
                rest = [event async for event in remaining_events(events)]
                exit_code = await exit_code_of(service.process, within=grace)
            else:
                # The app stops the reply at the end of the grace period, and the stream ends
                # with its last event before uvicorn would cut the connection.
                rest = [event async for event in remaining_events(events)]
                exit_code = await exit_code_of(service.process, within=grace + 6)
            elapsed = time.monotonic() - signalled
            return Shutdown(started, rest, exit_code, elapsed, service.output())
    finally:
        fake.gate.set()


def assert_exited_cleanly(shutdown: Shutdown) -> None:
    # Exit status 0 is wanted; uvicorn re-raises SIGTERM after a graceful shutdown, so the
    # process currently ends by the signal (see test_sigterm_exit_status_is_0).
    assert shutdown.exit_code in (0, -signal.SIGTERM), (
        f"exit code {shutdown.exit_code}:\n{shutdown.output}"
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stream_in_flight_at_sigterm_finishes_and_is_saved(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    grace = 20.0
    database_url = await database_factory.create_migrated(backend)

    shutdown = await sigterm_mid_stream(tmp_path, database_url, grace=grace, release=True)

    names = [event.event for event in shutdown.rest]
    assert names == ["delta"] * (len(CHUNKS) - 1) + ["done"], shutdown.rest
    assert "".join(e.data["content"] for e in shutdown.rest[:-1]) == "".join(CHUNKS[1:])
    session_id = shutdown.started.data["session_id"]
    done = shutdown.rest[-1]
    assert done.data["session_id"] == session_id
    assert_exited_cleanly(shutdown)
    assert shutdown.elapsed < grace
    assert "Traceback" not in shutdown.output, shutdown.output

    messages = await stored(database_url, session_id)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert str(reply["id"]) == done.data["message_id"]
    assert reply["content"] == "".join(CHUNKS)
    assert reply["metadata"]["status"] == "complete"
    assert reply["metadata"]["finish_reason"] == "stop"
    assert "error" not in reply["metadata"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stream_still_running_when_the_grace_period_ends_is_saved_incomplete(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    grace = 1.0
    database_url = await database_factory.create_migrated(backend)

    shutdown = await sigterm_mid_stream(tmp_path, database_url, grace=grace, release=False)

    assert_exited_cleanly(shutdown)
    assert shutdown.elapsed >= grace, "it did not wait for the reply"
    # The stream ends with its `done`, not cut by the server's own timeout.
    assert [event.event for event in shutdown.rest] == ["done"], shutdown.output
    done = shutdown.rest[0].data
    assert done["status"] == "incomplete"
    assert_no_cancelled_requests(shutdown.output)
    messages = await stored(database_url, shutdown.started.data["session_id"])
    assert [m["role"] for m in messages] == ["user", "assistant"], shutdown.output
    reply = messages[1]
    assert str(reply["id"]) == done["message_id"]
    assert reply["content"] == CHUNKS[0]
    assert reply["metadata"]["status"] == "incomplete"
    assert reply["metadata"]["error"] == "shutdown"


def assert_no_cancelled_requests(output: str) -> None:
    """uvicorn cancelled no request (its timeout), and nothing was logged as an error."""
    assert "CancelledError" not in output, output
    assert "timeout graceful shutdown exceeded" not in output, output
    assert "Traceback" not in output, output


class ArrivalRecordingUpstream(FakeUpstream):
    """The fake upstream, setting `arrived` when a request comes in."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def _complete(self, request: Request) -> Response:
        self.arrived.set()
        return await super()._complete(request)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_plain_request_still_waiting_when_the_grace_period_ends_gets_503_json(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    grace = 1.0
    database_url = await database_factory.create_migrated(backend)
    gate = asyncio.Event()
    fake = ArrivalRecordingUpstream()
    fake.default = Respond(chunks=CHUNKS, before_first_chunk=gate)
    async with (
        fake_upstream(fake) as upstream_url,
        run_service(tmp_path, database_url, upstream_env(upstream_url, grace)) as service,
        httpx.AsyncClient(base_url=service.base_url, timeout=IO_TIMEOUT) as client,
    ):
        try:
            sending = asyncio.create_task(
                client.post(CHAT, json={"message": "A long question " * 50, "session_id": "plain"})
            )
            async with asyncio.timeout(IO_TIMEOUT):
                await fake.arrived.wait()  # the reply is being generated: the fake holds it
            service.process.send_signal(signal.SIGTERM)
            response = await sending
            exit_code = await exit_code_of(service.process, within=grace + 6)
            output = service.output()
        finally:
            gate.set()  # before the fake stops: it waits for the request it holds

    assert response.status_code == 503, output
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": ShuttingDown.detail}
    assert exit_code == -signal.SIGTERM, output
    assert_no_cancelled_requests(output)
    messages = await stored(database_url, "plain")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply["content"] == ""
    assert reply["metadata"]["status"] == "failed"
    assert reply["metadata"]["error"] == "shutdown"


async def test_shutdown_takes_no_longer_than_the_grace_period(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    grace = 2.0
    database_url = await database_factory.create_migrated("sqlite")

    shutdown = await sigterm_mid_stream(tmp_path, database_url, grace=grace, release=False)

    # The reply is cancelled and saved when the grace period ends, then the process exits.
    assert shutdown.elapsed < grace + 1.5, f"exited {shutdown.elapsed:.1f}s after SIGTERM"


async def test_sigterm_ends_the_process_like_uvicorn_does(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    database_url = await database_factory.create_migrated("sqlite")
    async with run_service(
        tmp_path, database_url, upstream_env("http://127.0.0.1:9", 5)
    ) as service:
        service.process.send_signal(signal.SIGTERM)
        exit_code = await exit_code_of(service.process, within=IO_TIMEOUT)
    # uvicorn re-raises SIGTERM after its clean shutdown: the process ends by that signal.
    assert exit_code == -signal.SIGTERM, service.output()
