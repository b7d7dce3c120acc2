"""The real service as a subprocess (`python -m app`), as it is deployed, for the tests of what
only a process shows: signals, crashes, several processes on one database. The fake
OpenAI-compatible upstream is served in the test's event loop."""

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import PROJECT_ROOT
from app.kit.db.engine import Database, create_engine
from tests.api.helpers import SseEvent, SseParser, stored_messages
from tests.conftest import make_settings, serve
from tests.fakes.openai_server import TITLE_MODEL, FakeOpenAI, Respond

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(service: Service) -> None:
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


async def wait_refusing_connections(base_url: str) -> None:
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
                pytest.fail("the server kept accepting connections after it was told to stop")
            await asyncio.sleep(0.02)


def upstream_env(upstream_url: str, grace_seconds: float, **extra: str) -> dict[str, str]:
    """The environment of a service that answers through the fake OpenAI-compatible upstream
    at `upstream_url`, with `extra` on top."""
    return {
        "ASSISTANT_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{upstream_url}/v1",
        "OPENAI_MODEL": "gpt-4",
        # Title requests go to the fake's own script (by default: no title).
        "TITLE_MODEL": TITLE_MODEL,
        "OPENAI_MAX_RETRIES": "0",
        "SHUTDOWN_GRACE_SECONDS": str(grace_seconds),
        **extra,
    }


@asynccontextmanager
async def run_service(
    tmp_path: Path, database_url: str, env: Mapping[str, str]
) -> AsyncIterator[Service]:
    """`python -m app` from a directory without `.env`, on `database_url` (already migrated),
    configured only by `env` on top of a minimal environment; ready when yielded, always stopped
    on the way out (`stop`). Its output goes to `tmp_path/service-<port>.log`."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "MIGRATE_ON_STARTUP": "false",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    log = tmp_path / f"service-{port}.log"
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
        await wait_ready(service)
        yield service
    finally:
        await stop(process)


@asynccontextmanager
async def run_services(
    tmp_path: Path, database_url: str, env: Mapping[str, str], count: int = 2
) -> AsyncIterator[list[Service]]:
    """`count` services as `run_service` runs one, started at once: a start-up is mostly
    imports, CPU-bound, so two take little longer than one on two cores."""
    async with AsyncExitStack() as services:
        async with asyncio.TaskGroup() as starting:
            started = [
                starting.create_task(
                    services.enter_async_context(run_service(tmp_path, database_url, env))
                )
                for _ in range(count)
            ]
        yield [task.result() for task in started]


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not exited within IO_TIMEOUT: a supervisor killed
    outright would leave its workers behind until they notice."""
    if process.returncode is not None:
        return
    with suppress(ProcessLookupError):
        process.terminate()
    try:
        async with asyncio.timeout(IO_TIMEOUT):
            await process.wait()
    except TimeoutError:
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


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    parser = SseParser()
    async for line in response.aiter_lines():
        if (event := parser.feed(line)) is not None:
            yield event


async def next_event(events: AsyncIterator[SseEvent]) -> SseEvent:
    async with asyncio.timeout(IO_TIMEOUT):
        return await anext(events)


async def exit_code_of(process: asyncio.subprocess.Process, within: float) -> int:
    try:
        async with asyncio.timeout(within):
            return await process.wait()
    except TimeoutError:
        pytest.fail(f"the service did not exit within {within:.1f}s of SIGTERM")


async def stored(database_url: str, session_id: str) -> list[dict[str, Any]]:
    """The session's messages, read directly from the database (after the service exited)."""
    database = Database(create_engine(make_settings(database_url)))
    try:
        return await stored_messages(database, session_id)
    finally:
        await database.dispose()


async def remaining_events(events: AsyncIterator[SseEvent]) -> AsyncIterator[SseEvent]:
    """The remaining events, each awaited for at most IO_TIMEOUT."""
    while True:
        try:
            yield await next_event(events)
        except StopAsyncIteration:
            return
