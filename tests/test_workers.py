"""WORKERS: several server processes on one port (issue 15). The real service, `python -m app`,
on both databases: requests spread over the workers and metadata stays exact; metrics add up
over the workers; a worker that dies is replaced; SIGTERM stops them all, as one process does;
workers whose supervisor was killed stop themselves, as gracefully.

A killed process tells nothing, so what the workers write in the background (each registers in
chat_processes as it starts) is polled, bounded.
"""

import asyncio
import os
import signal
import time
from collections.abc import Set as AbstractSet
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.kit.db.engine import Database, create_engine
from app.kit.db.tables import chat_processes
from tests.api.helpers import CHAT, SESSIONS, STREAM
from tests.conftest import BACKENDS, DatabaseFactory, make_settings
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
    sse_events,
    stored,
    upstream_env,
    wait_refusing_connections,
)

WORKERS = 2
POLL_TIMEOUT = 30.0
# Workers heartbeat often, so that a replacement registers soon after it starts.
ENV = {
    "WORKERS": str(WORKERS),
    "METRICS_ENABLED": "true",
    "PROCESS_HEARTBEAT_SECONDS": "0.2",
    "LOG_LEVEL": "INFO",
}
SENDERS = 24


async def worker_pids(database_url: str) -> set[int]:
    database = Database(create_engine(make_settings(database_url)))
    try:
        async with database.read() as conn:
            return {row.pid for row in await conn.execute(select(chat_processes.c.pid))}
    finally:
        await database.dispose()


async def wait_for_workers(
    database_url: str, service: Service, *, count: int, without: AbstractSet[int] = frozenset()
) -> set[int]:
    """The pids of `count` live registered workers, none of `without`, polled, bounded."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        pids = {pid for pid in await worker_pids(database_url) if _alive(pid)} - without
        if len(pids) == count:
            return pids
        if service.process.returncode is not None:
            pytest.fail(f"the service exited:\n{service.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"workers registered: {pids}\n{service.output()}")
        await asyncio.sleep(0.1)


async def wait_for_exit(pids: AbstractSet[int], within: float) -> None:
    """Every one of `pids` exited, polled, bounded; the ones left are killed before failing."""
    deadline = time.monotonic() + within
    while alive := {pid for pid in pids if _alive(pid)}:
        if time.monotonic() > deadline:
            for pid in alive:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"workers {alive} still running {within}s later")
        await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with suppress(OSError):
        # An orphan that exited stays a zombie until its new parent reaps it, which a
        # container's PID 1 may never do: it has exited all the same.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def requests_total(metrics_text: str, route: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "chat_http_requests_total" and sample.labels.get("route") == route
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_workers_share_the_port_and_keep_metadata_exact(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    database_url = await database_factory.create_migrated(backend)
    async with run_service(tmp_path, database_url, ENV) as service:
        pids = await wait_for_workers(database_url, service, count=WORKERS)
        assert service.process.pid not in pids  # the parent only supervises

        # Separate connections, so that the kernel spreads them over the workers.
        async def send(n: int) -> int:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=IO_TIMEOUT) as c:
                response = await c.post(CHAT, json={"message": f"m{n}", "session_id": "shared"})
                return response.status_code

        statuses = await asyncio.gather(*(send(n) for n in range(SENDERS)))
        async with httpx.AsyncClient(base_url=service.base_url, timeout=IO_TIMEOUT) as client:
            detail = (await client.get(f"{SESSIONS}/shared")).json()
            metrics = (await client.get("/metrics")).text

        assert statuses == [200] * SENDERS
        assert detail["message_count"] == 2 * SENDERS
        # Whichever worker answered the scrape, it counts every worker's requests.
        assert requests_total(metrics, CHAT) == SENDERS

        service.process.send_signal(signal.SIGTERM)
        assert await exit_code_of(service.process, within=IO_TIMEOUT) == -signal.SIGTERM
    assert not any(_alive(pid) for pid in pids)
    assert "Traceback" not in service.output()


async def test_a_worker_that_dies_is_replaced(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    database_url = await database_factory.create_migrated(BACKENDS[-1])
    async with run_service(tmp_path, database_url, ENV) as service:
        pids = await wait_for_workers(database_url, service, count=WORKERS)
        killed = min(pids)
        os.kill(killed, signal.SIGKILL)

        survivors = await wait_for_workers(database_url, service, count=WORKERS, without={killed})

        assert len(survivors & pids) == 1
        async with httpx.AsyncClient(base_url=service.base_url, timeout=IO_TIMEOUT) as client:
            for _ in range(4):
                assert (await client.get("/readyz")).status_code == 200
        assert f"worker [{killed}] exited" in service.output()


async def test_workers_stop_gracefully_when_the_supervisor_is_killed(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    database_url = await database_factory.create_migrated(BACKENDS[-1])
    fake = GatedFakeOpenAI(default=Respond(chunks=CHUNKS))
    try:
        async with (
            fake_upstream(fake) as upstream_url,
            run_service(tmp_path, database_url, upstream_env(upstream_url, 20, **ENV)) as service,
            httpx.AsyncClient(base_url=service.base_url, timeout=IO_TIMEOUT) as client,
        ):
            pids = await wait_for_workers(database_url, service, count=WORKERS)
            async with client.stream("POST", STREAM, json={"message": "Hello"}) as response:
                events = sse_events(response)
                started = await next_event(events)
                assert (await next_event(events)).event == "delta"

                # The reply is mid-stream (the fake holds the rest): the supervisor dies
                # without a word to its workers.
                service.process.kill()
                await service.process.wait()
                await wait_refusing_connections(service.base_url)
                fake.gate.set()
                rest = [event async for event in remaining_events(events)]
            await wait_for_exit(pids, within=IO_TIMEOUT)
    finally:
        fake.gate.set()

    # The stream in flight finished and was saved, as on SIGTERM.
    assert [event.event for event in rest] == ["delta"] * (len(CHUNKS) - 1) + ["done"]
    messages = await stored(database_url, started.data["session_id"])
    assert [m["content"] for m in messages] == ["Hello", "".join(CHUNKS)]
    assert messages[1]["metadata"]["status"] == "complete"
    output = service.output()
    for pid in pids:
        assert f"Finished server process [{pid}]" in output, output
    assert "Traceback" not in output
