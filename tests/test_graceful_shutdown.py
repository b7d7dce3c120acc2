"""Graceful shutdown: streams in flight at SIGTERM finish (up to SHUTDOWN_GRACE_SECONDS) and are
saved; a stream still running when the grace period ends is saved as incomplete.

The real service runs as a subprocess (`python -m app`), as it is deployed, on SQLite and on
PostgreSQL, against a fake OpenAI-compatible upstream served in the test's event loop. The fake
sends the first chunk, then holds the rest until the test releases it, so the stream is
deterministically in flight when SIGTERM arrives.
"""

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import PROJECT_ROOT
from app.db import migrate
from app.db.engine import Database, create_engine
from tests.api.helpers import STREAM, SseEvent, SseParser, stored_messages
from tests.conftest import BACKENDS, DatabaseFactory, make_settings, serve
from tests.fakes.openai_server import FakeOpenAI, Respond

CHUNKS = ["The ", "reply ", "arrives ", "in ", "pieces."]
START_TIMEOUT = 20.0  # seconds for the subprocess to answer /readyz
IO_TIMEOUT = 10.0  # seconds for any single step of the conversation


@dataclass
class GatedFakeOpenAI(FakeOpenAI):
    """The fake upstream, streaming the first chunk at once and the rest after `gate` is set."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def _chunks(self, behaviour: Respond, *, include_usage: bool) -> AsyncIterator[bytes]:
        first = True
        async for line in super()._chunks(behaviour, include_usage=include_usage):
            yield line
            if first:
                first = False
                await self.gate.wait()


@dataclass
class Service:
    process: asyncio.subprocess.Process
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_ready(service: Service) -> None:
    """Poll GET /readyz until it answers 200 (a subprocess has nothing to await), bounded."""
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(base_url=service.base_url, timeout=2) as client:
        while True:
            if service.process.returncode is not None:
                pytest.fail(f"the service exited at start-up:\n{service.output()}")
            with suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"the service was not ready in {START_TIMEOUT}s:\n{service.output()}")
            await asyncio.sleep(0.05)


async def _wait_refusing_connections(base_url: str) -> None:
    """Wait, bounded, until the server refuses new connections: the first step of its shutdown."""
    deadline = time.monotonic() + IO_TIMEOUT
    async with httpx.AsyncClient(base_url=base_url, timeout=1) as client:
        while True:
            try:
                await client.get("/healthz")
            except httpx.ConnectError:
                return
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A connection the kernel queued just before the listener closed is reset, not
                # refused: the shutdown has begun, but only a refused connect proves it.
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server kept accepting connections after SIGTERM")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def run_service(
    tmp_path: Path, database_url: str, upstream_url: str, grace_seconds: float
) -> AsyncIterator[Service]:
    """`python -m app` from a directory without `.env`, configured only by `env`; always killed
    on the way out."""
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "MIGRATE_ON_STARTUP": "false",
        "ASSISTANT_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{upstream_url}/v1",
        "OPENAI_MODEL": "gpt-4",
        "OPENAI_MAX_RETRIES": "0",
        "SHUTDOWN_GRACE_SECONDS": str(grace_seconds),
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "service.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    service = Service(process=process, base_url=f"http://127.0.0.1:{port}", log=log)
    try:
        await _wait_ready(service)
        yield service
    finally:
        if process.returncode is None:
            process.kill()
            with suppress(TimeoutError):
                async with asyncio.timeout(IO_TIMEOUT):
                    await process.wait()


@asynccontextmanager
async def fake_upstream(fake: FakeOpenAI) -> AsyncIterator[str]:
    """The fake served on loopback in this event loop (`serve` takes a FastAPI app, hence the
    wrapper); its base URL."""
    wrapper = FastAPI()
    wrapper.mount("/", fake.app())
    async with serve(wrapper) as live:
        yield live.base_url


async def _events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    parser = SseParser()
    async for line in response.aiter_lines():
        if (event := parser.feed(line)) is not None:
            yield event


async def _next(events: AsyncIterator[SseEvent]) -> SseEvent:
    async with asyncio.timeout(IO_TIMEOUT):
        return await anext(events)


async def _exit_code(process: asyncio.subprocess.Process, within: float) -> int:
    try:
        async with asyncio.timeout(within):
            return await process.wait()
    except TimeoutError:
        pytest.fail(f"the service did not exit within {within:.1f}s of SIGTERM")


async def _migrated_database(database_factory: DatabaseFactory, backend: str) -> str:
    url = await database_factory.create(backend)
    await migrate.upgrade_async(make_settings(url).database_url)
    return url


async def _stored(database_url: str, session_id: str) -> list[dict[str, Any]]:
    """The session's messages, read directly from the database (after the service exited)."""
    database = Database(create_engine(make_settings(database_url)))
    try:
        return await stored_messages(database, session_id)
    finally:
        await database.dispose()


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
            run_service(tmp_path, database_url, upstream_url, grace) as service,
            httpx.AsyncClient(base_url=service.base_url, timeout=IO_TIMEOUT) as client,
            client.stream("POST", STREAM, json={"message": "Tell me something"}) as response,
        ):
            assert response.status_code == 200
            events = _events(response)
            started = await _next(events)
            assert started.event == "session", started
            first = await _next(events)
            assert first.event == "delta", first
            assert first.data == {"content": CHUNKS[0]}

            # The reply is mid-stream (the fake holds the rest): ask the service to stop.
            service.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            rest: list[SseEvent] = []
            if release:
                await _wait_refusing_connections(service.base_url)
                assert service.process.returncode is None, "it exited with a stream in flight"
                fake.gate.set()
                rest = [event async for event in _remaining(events)]
                exit_code = await _exit_code(service.process, within=grace)
            else:
                # uvicorn waits up to int(grace) + 1 s for the connection, then the app up to
                # grace s for the reply task; a few seconds more for the rest of the shutdown.
                exit_code = await _exit_code(service.process, within=2 * grace + 6)
                with suppress(httpx.TransportError):  # the connection may be cut
                    rest = [event async for event in _remaining(events)]
            elapsed = time.monotonic() - signalled
            return Shutdown(started, rest, exit_code, elapsed, service.output())
    finally:
        fake.gate.set()


async def _remaining(events: AsyncIterator[SseEvent]) -> AsyncIterator[SseEvent]:
    """The remaining events, each awaited for at most IO_TIMEOUT."""
    while True:
        try:
            yield await _next(events)
        except StopAsyncIteration:
            return


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
    database_url = await _migrated_database(database_factory, backend)

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

    messages = await _stored(database_url, session_id)
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
    database_url = await _migrated_database(database_factory, backend)

    shutdown = await sigterm_mid_stream(tmp_path, database_url, grace=grace, release=False)

    assert_exited_cleanly(shutdown)
    assert shutdown.elapsed >= grace, "it did not wait for the reply"
    assert "done" not in [event.event for event in shutdown.rest], shutdown.rest
    messages = await _stored(database_url, shutdown.started.data["session_id"])
    assert [m["role"] for m in messages] == ["user", "assistant"], shutdown.output
    reply = messages[1]
    assert reply["content"] == CHUNKS[0]
    assert reply["metadata"]["status"] == "incomplete"
    assert reply["metadata"]["error"] == "shutdown"


async def test_shutdown_takes_no_longer_than_the_grace_period(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    grace = 2.0
    database_url = await _migrated_database(database_factory, "sqlite")

    shutdown = await sigterm_mid_stream(tmp_path, database_url, grace=grace, release=False)

    # The reply is cancelled and saved when the grace period ends, then the process exits.
    assert shutdown.elapsed < grace + 1.5, f"exited {shutdown.elapsed:.1f}s after SIGTERM"


async def test_sigterm_ends_the_process_like_uvicorn_does(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    database_url = await _migrated_database(database_factory, "sqlite")
    async with run_service(tmp_path, database_url, "http://127.0.0.1:9", 5) as service:
        service.process.send_signal(signal.SIGTERM)
        exit_code = await _exit_code(service.process, within=IO_TIMEOUT)
    # uvicorn re-raises SIGTERM after its clean shutdown: the process ends by that signal.
    assert exit_code == -signal.SIGTERM, service.output()
