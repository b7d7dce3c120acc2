"""Two instances of the service on one database, as two processes or replicas are: a reply
streamed by one is stopped and resumed through the other.

Each instance is a real app served on its own port, with its own engine and process id, so
that nothing but the database and the bus joins them: on PostgreSQL LISTEN/NOTIFY, or Redis
pub/sub; on SQLite (no bus) the marks and drafts in the database alone.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.assistants import Reply, ReplyEnd, ReplyEvent, TextDelta, Turn
from app.kit.db.engine import Database, create_engine
from app.main import create_app
from tests.api.helpers import (
    STREAM,
    OpenStream,
    open_stream,
    parse_sse,
    session_url,
    stored_messages,
)
from tests.conftest import DatabaseFactory, LiveServer, make_settings, serve
from tests.redis_helpers import redis_answers, redis_url


class FedAssistant:
    """Streams what the test feeds it, piece by piece, until `end`."""

    provider = "test"
    model = "test-1"

    def __init__(self) -> None:
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self.asked = asyncio.Event()

    def feed(self, *pieces: str) -> None:
        for piece in pieces:
            self._pieces.put_nowait(piece)

    def end(self) -> None:
        self._pieces.put_nowait(None)

    async def aclose(self) -> None:
        """Holds nothing open."""

    async def reply(self, history: Sequence[Turn]) -> Reply:
        raise NotImplementedError

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        self.asked.set()
        while (piece := await self._pieces.get()) is not None:
            yield TextDelta(piece)
        yield ReplyEnd(model=self.model)


@dataclass
class Pair:
    """Two instances of the service on one database."""

    first: LiveServer
    second: LiveServer
    database: Database
    assistant: FedAssistant = field(default_factory=FedAssistant)

    def feed_first(self) -> FedAssistant:
        """A new assistant for the first instance's next reply."""
        self.assistant = FedAssistant()
        self.first.app.state.assistant = self.assistant
        return self.assistant


SETUPS = ["postgresql", "postgresql-redis", "sqlite"]


@pytest.fixture(scope="module", params=SETUPS)
async def pair(
    request: pytest.FixtureRequest, database_factory: DatabaseFactory
) -> AsyncIterator[Pair]:
    setup = str(request.param)
    overrides: dict[str, Any] = {}
    if setup == "postgresql-redis":
        if not await redis_answers():
            pytest.skip("Redis is not reachable at 127.0.0.1:6379")
        overrides["redis_url"] = redis_url(14)
        overrides["reply_bus"] = "redis"
    if setup == "sqlite":
        # No bus: a stop marked in the database is seen when the reply's text is next saved,
        # and a reply of the other instance is followed through its saved text.
        overrides["reply_save_interval_ms"] = 20
    url = await database_factory.create_migrated(setup.split("-")[0])
    # Few connections: the test PostgreSQL is shared.
    settings = make_settings(url, rate_limit_enabled=False, database_pool_size=3, **overrides)
    database = Database(create_engine(settings))
    try:
        async with serve(create_app(settings)) as first, serve(create_app(settings)) as second:
            yield Pair(first=first, second=second, database=database)
    finally:
        await database.dispose()


@pytest.fixture
async def replicas(pair: Pair) -> AsyncIterator[Pair]:
    yield pair
    pair.assistant.end()
    for live in (pair.first, pair.second):
        await live.app.state.reply_tasks.wait_idle()
    async with pair.database.write() as conn:
        for table in ("chat_replies_generating", "chat_messages", "chat_sessions"):
            await conn.execute(text(f"DELETE FROM {table}"))


@asynccontextmanager
async def resumed(
    live: LiveServer, session_id: str, last_event_id: str | None = None
) -> AsyncIterator[OpenStream]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
        client.stream("GET", f"{session_url(session_id)}/stream", headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        yield OpenStream(response.aiter_lines())


async def stored_reply(database: Database, session_id: str) -> dict[str, Any]:
    [reply] = [r for r in await stored_messages(database, session_id) if r["role"] == "assistant"]
    return reply


STOP_ARRIVES_SECONDS = 30


async def stop_through(
    live: LiveServer, assistant: FedAssistant, *streams: OpenStream
) -> httpx.Response:
    """POST .../stop through `live` while the reply goes on (a piece at a time, each read by
    the streams): without a bus, the process that generates it sees the stop when it next
    saves its text. The answer, once the streams have ended."""
    stopping = asyncio.create_task(live.client.post(f"{session_url('s')}/stop"))
    ended = False
    # Bounded: a stop that never arrives fails here instead of feeding the reply forever
    # (seen once in a full run, on the first PostgreSQL-with-Redis test: not understood yet).
    async with asyncio.timeout(STOP_ARRIVES_SECONDS):
        while not ended:
            assistant.feed(".")
            for stream in streams:
                ended = (await stream.read_until("delta"))[-1].event != "delta" or ended
    return await stopping


async def test_a_reply_is_stopped_through_the_other_instance(replicas: Pair) -> None:
    assistant = replicas.feed_first()
    assistant.feed("first ")
    body = {"message": "hello", "session_id": "s"}
    async with open_stream(replicas.first, body) as stream:
        await stream.read_until("delta")

        stopped = await stop_through(replicas.second, assistant, stream)

    reply = await stored_reply(replicas.database, "s")
    assert (stopped.status_code, stopped.json()) == (200, {"stopped": True})
    assert reply["content"] == stream.text
    assert reply["content"].startswith("first ")
    assert (reply["metadata"]["status"], reply["metadata"]["error"]) == ("incomplete", "stopped")
    assert stream.events[-1].event == "done"
    assert stream.events[-1].data == {
        "session_id": "s",
        "message_id": str(reply["id"]),
        "status": "incomplete",
    }

    again = await replicas.second.client.post(f"{session_url('s')}/stop")
    assert again.json() == {"stopped": False}


async def test_a_cut_stream_resumes_through_the_other_instance(replicas: Pair) -> None:
    assistant = replicas.feed_first()
    assistant.feed("first ", "second ")
    body = {"message": "hello", "session_id": "s"}
    async with open_stream(replicas.first, body) as first:
        await first.read_until("delta")
        await first.read_until("delta")
    # The client is cut off, and comes back through the other instance.
    last = first.events[-1]
    async with resumed(replicas.second, "s", last.id) as second:
        assistant.feed("third ")
        while "third" not in second.text:  # relayed live, before the reply ends
            await second.read_until("delta")
        assistant.feed("fourth")
        assistant.end()
        rest = await second.read_until()

    reply = await stored_reply(replicas.database, "s")
    assert first.text + second.text == reply["content"] == "first second third fourth"
    assert rest[-1].event == "done"
    assert rest[-1].data["status"] == "complete"
    assert rest[-1].id == f"{reply['id']}:{len(reply['content'])}"


async def test_a_stream_followed_from_the_start_through_the_other_instance(
    replicas: Pair,
) -> None:
    assistant = replicas.feed_first()
    assistant.feed("héllo ", "🙂 ")
    body = {"message": "hello", "session_id": "s"}
    async with open_stream(replicas.first, body) as first:
        await first.read_until("delta")
        await first.read_until("delta")
        async with resumed(replicas.second, "s") as second:
            [started] = await second.read_until("session")
            assistant.feed("wörld")
            assistant.end()
            await second.read_until()
            await first.read_until()

    reply = await stored_reply(replicas.database, "s")
    assert started.data == first.events[0].data
    assert second.text == first.text == reply["content"] == "héllo 🙂 wörld"
    assert second.events[-1].data == first.events[-1].data


async def test_an_ended_reply_is_resumed_through_the_other_instance(replicas: Pair) -> None:
    assistant = replicas.feed_first()
    assistant.feed("whole ", "reply")
    assistant.end()
    async with open_stream(replicas.first, {"message": "hello", "session_id": "s"}) as first:
        await first.read_until()
    middle = next(e for e in first.events if e.event == "delta")

    async with resumed(replicas.second, "s", middle.id) as second:
        await second.read_until()

    assert [e.event for e in second.events] == ["delta", "done"]
    assert "whole " + second.text == (await stored_reply(replicas.database, "s"))["content"]
    assert second.events[-1] == first.events[-1]
    nothing = await replicas.second.client.get(f"{session_url('s')}/stream")
    assert nothing.status_code == 204


async def test_stopping_through_the_other_instance_ends_its_followers_too(
    replicas: Pair,
) -> None:
    assistant = replicas.feed_first()
    assistant.feed("first ")
    async with open_stream(replicas.first, {"message": "hello", "session_id": "s"}) as first:
        await first.read_until("delta")
        async with resumed(replicas.second, "s") as follower:
            await follower.read_until("session")
            stopped = await stop_through(replicas.second, assistant, first)
            await follower.read_until()

    assert stopped.json() == {"stopped": True}
    reply = await stored_reply(replicas.database, "s")
    assert follower.events[-1].data == first.events[-1].data
    assert follower.events[-1].data["status"] == "incomplete"
    assert follower.text == first.text == reply["content"]


async def test_a_stream_sent_again_through_the_other_instance_follows_the_first_reply(
    replicas: Pair,
) -> None:
    """The same Idempotency-Key reaches the other instance (a proxy's retry, a client's):
    it finds the key in the shared database and follows the reply the first instance writes."""
    assistant = replicas.feed_first()
    assistant.feed("first ")
    body = {"message": "hello", "session_id": "s"}
    key = {"Idempotency-Key": "sent-twice"}
    async with open_stream(replicas.first, body, key) as first:
        await first.read_until("delta")
        async with open_stream(replicas.second, body, key) as again:
            [started] = await again.read_until("session")
            assistant.feed("second")
            assistant.end()
            await again.read_until()
            await first.read_until()

    assert started.data == first.events[0].data
    assert again.text == first.text == "first second"
    assert again.events[-1].data == first.events[-1].data
    assert len(await stored_messages(replicas.database, "s")) == 2


async def test_the_same_request_at_once_on_both_instances_stores_one_message(
    replicas: Pair,
) -> None:
    assistant = replicas.feed_first()
    assistant.feed("the reply")
    assistant.end()
    body = {"message": "hello", "session_id": "s"}
    key = {"Idempotency-Key": "at-once"}

    answers = await asyncio.gather(
        *(
            live.client.post(STREAM, json=body, headers=key)
            for live in (replicas.first, replicas.second)
        )
    )

    # Whichever instance's key committed first writes the reply; both streams are of it.
    streams = [parse_sse(answer.text) for answer in answers]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert streams[0][0].data == streams[1][0].data
    assert [s[-1].event for s in streams] == ["done", "done"]
    assert len(await stored_messages(replicas.database, "s")) == 2
