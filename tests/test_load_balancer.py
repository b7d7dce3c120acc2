"""Two replicas of the service on one PostgreSQL behind nginx (issue 15), with the proxy
configuration docs/deploy.md recommends (SSE unbuffered, HTTP/1.1 keep-alive upstream): a
stream cut and resumed through the other replica with `Last-Event-ID` receives exactly the
stored reply; Stop through the other replica stops it; a replica killed mid-stream leaves its
readers on the other one a `done` with status `incomplete`.

nginx is Debian's (`make nginx` installs it), started by the test on loopback with its own
configuration; it adds an `X-Upstream` header (which replica answered) so that the test knows
it crossed replicas. Its round robin sends consecutive requests to alternate replicas.
"""

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import STREAM, SseEvent
from tests.conftest import IN_CI, DatabaseFactory
from tests.fakes.openai_server import Respond
from tests.service_process import (
    CHUNKS,
    IO_TIMEOUT,
    GatedFakeOpenAI,
    Service,
    fake_upstream,
    free_port,
    next_event,
    remaining_events,
    run_services,
    sse_events,
    stored,
    upstream_env,
)
from tests.test_crash_recovery import FAST_RECOVERY, interrupted, poll_reply

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_INSTALLED = Path(NGINX).exists()

# The `location` of docs/deploy.md, on loopback, plus the header that names the replica.
NGINX_CONF = """
worker_processes 1;
daemon off;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    upstream chat {{
        server 127.0.0.1:{first};
        server 127.0.0.1:{second};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;

        location / {{
            proxy_pass http://chat;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_buffering off;
            proxy_read_timeout 300s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""

# Few connections each (the test PostgreSQL is shared), and dead replicas found in a second.
REPLICA_ENV = {**FAST_RECOVERY, "DATABASE_POOL_SIZE": "3"}


@dataclass
class Balanced:
    """nginx in front of two replicas."""

    base_url: str
    replicas: dict[str, Service]  # "127.0.0.1:port" -> the replica

    def served_by(self, response: httpx.Response) -> str:
        upstream = response.headers["X-Upstream"]
        assert upstream in self.replicas, upstream
        return upstream

    def other_than(self, upstream: str) -> str:
        [other] = set(self.replicas) - {upstream}
        return other


@asynccontextmanager
async def nginx_in_front(tmp_path: Path, first: Service, second: Service) -> AsyncIterator[str]:
    """nginx on a free loopback port, proxying to the two replicas; its base URL."""
    if not NGINX_INSTALLED:
        message = f"nginx is not installed at {NGINX} (run `make nginx`)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp_path,
            # As root, nginx's workers would run as nobody, who cannot use the temp paths.
            user="user root;" if os.geteuid() == 0 else "",
            first=first.base_url.rsplit(":", 1)[1],
            second=second.base_url.rsplit(":", 1)[1],
            port=port,
        )
    )
    process = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(tmp_path), "-c", str(conf), stderr=asyncio.subprocess.PIPE
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=1) as client:
            for _ in range(200):  # nginx has nothing to await: poll, bounded
                if process.returncode is not None:
                    errors = await process.stderr.read() if process.stderr else b""
                    pytest.fail(f"nginx exited: {errors.decode(errors='replace')}")
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("nginx did not answer")
        yield base_url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGQUIT)
            try:
                async with asyncio.timeout(IO_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


@asynccontextmanager
async def balanced(tmp_path: Path, database_url: str, upstream_url: str) -> AsyncIterator[Balanced]:
    env = upstream_env(upstream_url, 5, **REPLICA_ENV)
    async with (
        run_services(tmp_path, database_url, env) as (first, second),
        nginx_in_front(tmp_path, first, second) as base_url,
    ):
        yield Balanced(
            base_url,
            {service.base_url.removeprefix("http://"): service for service in (first, second)},
        )


async def steer_away_from(client: httpx.AsyncClient, lb: Balanced, upstream: str) -> None:
    """Make the next request go to the other replica: round robin alternates, so end on a
    request that `upstream` answered."""
    for _ in range(4):
        if lb.served_by(await client.get("/healthz")) == upstream:
            return
    pytest.fail("nginx's round robin never came back to the replica")


def deltas(events: list[SseEvent]) -> str:
    return "".join(event.data["content"] for event in events if event.event == "delta")


@pytest.fixture
async def postgresql_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create_migrated("postgresql")


@dataclass
class Scene:
    """The fake upstream (holding each reply after its first chunk), two replicas behind
    nginx, and a client of nginx."""

    fake: GatedFakeOpenAI
    lb: Balanced
    client: httpx.AsyncClient


@asynccontextmanager
async def scene(tmp_path: Path, database_url: str) -> AsyncIterator[Scene]:
    fake = GatedFakeOpenAI(default=Respond(chunks=CHUNKS))
    try:
        async with (
            fake_upstream(fake) as upstream_url,
            balanced(tmp_path, database_url, upstream_url) as lb,
            httpx.AsyncClient(base_url=lb.base_url, timeout=IO_TIMEOUT) as client,
        ):
            yield Scene(fake, lb, client)
    finally:
        fake.gate.set()


@dataclass
class Started:
    """A stream through nginx, read up to its first delta; the next request goes to the
    other replica."""

    producer: str  # the replica generating the reply
    events: AsyncIterator[SseEvent]
    session: SseEvent
    first: SseEvent

    @property
    def session_id(self) -> str:
        session_id: str = self.session.data["session_id"]
        return session_id


async def started(scene: Scene, response: httpx.Response) -> Started:
    events = sse_events(response)
    session = await next_event(events)
    first = await next_event(events)
    begun = Started(scene.lb.served_by(response), events, session, first)
    await steer_away_from(scene.client, scene.lb, begun.producer)
    return begun


def resume(scene: Scene, begun: Started) -> AbstractAsyncContextManager[httpx.Response]:
    """The stream resumed after its first delta, through nginx."""
    return scene.client.stream(
        "GET",
        f"/api/v1/chat/sessions/{begun.session_id}/stream",
        headers={"Last-Event-ID": str(begun.first.id)},
    )


async def test_a_stream_cut_and_resumed_through_the_other_replica_gets_the_stored_reply(
    postgresql_url: str, tmp_path: Path
) -> None:
    async with scene(tmp_path, postgresql_url) as lb_scene:
        async with lb_scene.client.stream("POST", STREAM, json={"message": "Tell me"}) as cut:
            begun = await started(lb_scene, cut)
        # The client is cut; the reply goes on, held by the fake after its first chunk.
        async with resume(lb_scene, begun) as resumed:
            assert resumed.status_code == 200
            assert lb_scene.lb.served_by(resumed) == lb_scene.lb.other_than(begun.producer)
            lb_scene.fake.gate.set()
            rest = [event async for event in remaining_events(sse_events(resumed))]

    [_, reply] = await stored(postgresql_url, begun.session_id)
    assert begun.first.event == "delta"
    assert deltas([begun.first, *rest]) == reply["content"] == "".join(CHUNKS)
    assert rest[-1].event == "done"
    assert rest[-1].data["status"] == "complete"
    assert rest[-1].data["message_id"] == begun.session.data["message_id"] == str(reply["id"])


async def test_stop_through_the_other_replica_stops_the_reply(
    postgresql_url: str, tmp_path: Path
) -> None:
    async with (
        scene(tmp_path, postgresql_url) as lb_scene,
        lb_scene.client.stream("POST", STREAM, json={"message": "Tell me"}) as response,
    ):
        begun = await started(lb_scene, response)

        stop = await lb_scene.client.post(f"/api/v1/chat/sessions/{begun.session_id}/stop")

        assert lb_scene.lb.served_by(stop) == lb_scene.lb.other_than(begun.producer)
        assert stop.json() == {"stopped": True}
        rest = [event async for event in remaining_events(begun.events)]

    [_, reply] = await stored(postgresql_url, begun.session_id)
    assert [event.event for event in rest] == ["done"]
    assert rest[-1].data["status"] == "incomplete"
    assert reply["content"] == begun.first.data["content"] == CHUNKS[0]
    assert reply["metadata"]["status"] == "incomplete"


async def test_readers_on_the_other_replica_get_done_when_the_producer_is_killed(
    postgresql_url: str, tmp_path: Path
) -> None:
    async with (
        scene(tmp_path, postgresql_url) as lb_scene,
        lb_scene.client.stream("POST", STREAM, json={"message": "Tell me"}) as response,
    ):
        begun = await started(lb_scene, response)
        async with resume(lb_scene, begun) as resumed:
            survivor = lb_scene.lb.served_by(resumed)
            assert survivor == lb_scene.lb.other_than(begun.producer)
            lb_scene.lb.replicas[begun.producer].process.kill()
            rest = [event async for event in remaining_events(sse_events(resumed))]
        reply = await poll_reply(
            postgresql_url, begun.session_id, interrupted, alive=lb_scene.lb.replicas[survivor]
        )

    assert [event.event for event in rest] == ["done"]
    assert rest[-1].data["status"] == "incomplete"
    assert reply["content"] == CHUNKS[0]
    assert reply["metadata"]["status"] == "incomplete"
