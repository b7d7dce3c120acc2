"""Stopping a streamed reply: generation is cancelled, what came so far is saved once, the
stream ends with an incomplete `done`, and the upstream request is closed."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.assistants import Assistant, Reply, ReplyEnd, ReplyEvent, TextDelta, Turn
from app.assistants.openai_compatible import OpenAICompatibleAssistant
from app.assistants.tokens import counter_for_model
from app.auth.access import Caller
from app.config import Settings
from app.kit.db.engine import Database
from app.kit.db.tables import chat_sessions
from app.kit.db.types import utc_now
from app.kit.errors import SessionNotFound
from app.messages.schemas import ChatRequest
from app.replies import queries as reply_queries
from app.replies.generation import ReplyTasks
from app.replies.live import StreamEvent
from app.replies.liveness import ProcessLiveness
from app.replies.relay import ReplyRelay
from app.replies.schemas import StreamDelta, StreamDone
from app.replies.streaming import ReplyStream, start_chat_stream, stop_reply
from tests.conftest import serve
from tests.fakes.openai_server import FakeOpenAI, Respond
from tests.services.helpers import GatedAssistant, message_rows, session_row

OPEN = Caller.open_mode()
STOPPED_METADATA = {"status": "incomplete", "finish_reason": "stopped", "error": "stopped"}


def summary(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: metadata.get(key) for key in STOPPED_METADATA}


async def start(
    database: Database,
    assistant: Assistant,
    tasks: ReplyTasks,
    session_id: str = "s",
    caller: Caller = OPEN,
) -> ReplyStream:
    return await start_chat_stream(
        database,
        assistant,
        tasks,
        caller,
        ChatRequest(message="hi", session_id=session_id),
        history_max_messages=5,
    )


async def first_delta(stream: ReplyStream) -> AsyncIterator[StreamEvent]:
    """The stream's events, after asserting the first is a delta (generation is under way)."""
    events = stream.events()
    first = await anext(events)
    assert isinstance(first, StreamDelta), first
    return events


class SilentAssistant:
    """Sets `started` when asked, then sends nothing until `gate` is set."""

    provider = "silent"
    model = "silent-1"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def aclose(self) -> None:
        """Holds nothing open."""

    async def reply(self, history: Sequence[Turn]) -> Reply:
        raise NotImplementedError

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        self.started.set()
        await self.gate.wait()
        yield TextDelta("late")
        yield ReplyEnd(model=self.model)


async def test_stop_saves_what_was_generated_and_ends_the_stream(database: Database) -> None:
    tasks = ReplyTasks()
    assistant = GatedAssistant()
    stream = await start(database, assistant, tasks)
    events = await first_delta(stream)

    stopped = await tasks.stop("s")

    assert stopped is True
    # The reply is saved by the time `stop` returns.
    stored = await message_rows(database, "s")
    assert [(m["role"], m["content"]) for m in stored] == [("user", "hi"), ("assistant", "first ")]
    assert summary(stored[-1]["metadata"]) == STOPPED_METADATA
    assert stored[-1]["metadata"]["provider"] == "gated"
    rest = [event async for event in events]
    assert rest == [StreamDone(session_id="s", message_id=stored[-1]["id"], status="incomplete")]
    session = await session_row(database, "s")
    assert (session["message_count"], session["last_message"]) == (2, "first")
    assert len(tasks) == 0
    assistant.gate.set()


async def test_stop_before_any_text_records_a_failed_reply(database: Database) -> None:
    tasks = ReplyTasks()
    assistant = SilentAssistant()
    stream = await start(database, assistant, tasks)
    await assistant.started.wait()

    assert await tasks.stop("s") is True

    [done] = [event async for event in stream.events()]
    assert isinstance(done, StreamDone)
    assert done.status == "incomplete"
    stored = await message_rows(database, "s")
    assert [(m["role"], m["content"]) for m in stored] == [("user", "hi"), ("assistant", "")]
    assert summary(stored[-1]["metadata"]) == {**STOPPED_METADATA, "status": "failed"}
    assert (await session_row(database, "s"))["last_message"] == "hi"
    assistant.gate.set()


async def test_stop_with_nothing_running_or_after_the_end_is_false(database: Database) -> None:
    tasks = ReplyTasks()
    assert await tasks.stop("s") is False
    assistant = GatedAssistant()
    assistant.gate.set()
    stream = await start(database, assistant, tasks)
    events = [event async for event in stream.events()]

    assert await tasks.stop("s") is False

    assert isinstance(events[-1], StreamDone)
    assert events[-1].status == "complete"
    stored = await message_rows(database, "s")
    assert [m["content"] for m in stored] == ["hi", "first second third"]
    assert stored[-1]["metadata"]["status"] == "complete"


async def test_stop_while_the_reply_is_being_saved_neither_loses_nor_repeats_it(
    database: Database,
) -> None:
    tasks = ReplyTasks()
    assistant = EndSignallingAssistant()
    stream = await start(database, assistant, tasks)
    events = await first_delta(stream)

    # Hold the session's row (and on SQLite the write lock) so the reply's save waits.
    async with database.write() as conn:
        await conn.execute(
            update(chat_sessions)
            .where(chat_sessions.c.session_id == "s")
            .values(title=chat_sessions.c.title)
        )
        assistant.gate.set()
        await assistant.ended.wait()  # generation is over: the task is saving now
        assert await tasks.stop("s") is False
    rest = [event async for event in events]

    assert isinstance(rest[-1], StreamDone)
    assert rest[-1].status == "complete"
    stored = await message_rows(database, "s")
    assert [m["content"] for m in stored] == ["hi", "first second third"]
    assert stored[-1]["metadata"]["status"] == "complete"


class EndSignallingAssistant(GatedAssistant):
    """GatedAssistant that sets `ended` once it has sent everything."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = asyncio.Event()

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        async for event in super().stream(history):
            yield event
        self.ended.set()


async def test_stop_stops_every_reply_of_the_session_and_no_other(database: Database) -> None:
    tasks = ReplyTasks()
    assistant = GatedAssistant()
    first = await first_delta(await start(database, assistant, tasks))
    second = await first_delta(await start(database, assistant, tasks))
    other = await first_delta(await start(database, assistant, tasks, session_id="other"))

    assert await tasks.stop("s") is True

    for events in (first, second):
        [done] = [event async for event in events]
        assert isinstance(done, StreamDone)
        assert done.status == "incomplete"
    stored = await message_rows(database, "s")
    # Each reply sits right after the message it answers: it took its place when it started.
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert [summary(m["metadata"]) for m in stored[1::2]] == [STOPPED_METADATA] * 2
    assert (await session_row(database, "s"))["message_count"] == 4
    assert len(tasks) == 1  # the other session's reply runs on
    assistant.gate.set()
    [*_, done] = [event async for event in other]
    assert isinstance(done, StreamDone)
    assert done.status == "complete"


async def test_shutdown_after_a_stop_leaves_the_stopped_reply_saved(database: Database) -> None:
    tasks = ReplyTasks()
    stopped = await first_delta(await start(database, GatedAssistant(), tasks, session_id="a"))
    running = await first_delta(await start(database, GatedAssistant(), tasks, session_id="b"))
    assert await tasks.stop("a") is True

    await tasks.shutdown(grace_seconds=0.01)

    assert len(tasks) == 0
    assert [summary(m["metadata"]) for m in (await message_rows(database, "a"))[1:]] == [
        STOPPED_METADATA
    ]
    shut_down = (await message_rows(database, "b"))[-1]["metadata"]
    assert (shut_down["status"], shut_down["error"]) == ("incomplete", "shutdown")
    assert [type(e).__name__ for e in [e async for e in stopped]] == ["StreamDone"]
    # Stopped at shutdown, the stream still ends with its `done`.
    [done] = [e async for e in running]
    assert isinstance(done, StreamDone)
    assert done.status == "incomplete"


async def test_stop_reply_checks_ownership_before_stopping(database: Database) -> None:
    tasks = ReplyTasks()
    assistant = GatedAssistant()
    events = await first_delta(await start(database, assistant, tasks, caller=Caller.user("alice")))

    with pytest.raises(SessionNotFound):
        await stop_reply(database, tasks, Caller.user("bob"), "s")
    with pytest.raises(SessionNotFound):
        await stop_reply(database, tasks, Caller.user("bob"), "no-such-session")

    assert len(tasks) == 1
    assert await stop_reply(database, tasks, Caller.user("alice"), "s") is True
    [done] = [event async for event in events]
    assert isinstance(done, StreamDone)
    assert done.status == "incomplete"


# --- Against an OpenAI-compatible server: stopping closes the upstream request -------------


@dataclass
class WatchedFakeOpenAI(FakeOpenAI):
    """Streams the first chunk, then waits for `gate`; records the chunks it sent, and
    whether the client closed the response (the server cancels its body then)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)

    async def _chunks(self, behaviour: Respond, *, include_usage: bool) -> AsyncIterator[bytes]:
        try:
            async for line in super()._chunks(behaviour, include_usage=include_usage):
                yield line
                self.sent += 1
                await self.gate.wait()
        except asyncio.CancelledError:
            self.closed_by_client.set()
            raise


async def test_stop_closes_the_upstream_stream(database: Database) -> None:
    fake = WatchedFakeOpenAI(default=Respond(chunks=["Partial ", "never ", "sent."]))
    async with (
        serve(cast(FastAPI, fake.app())) as upstream,
        aclosing(
            OpenAICompatibleAssistant(
                Settings(
                    _env_file=None,
                    assistant_provider="openai",
                    openai_base_url=f"{upstream.base_url}/v1",
                    openai_model="gpt-4",
                    openai_api_key=None,
                    openai_max_retries=0,
                    openai_timeout_seconds=10,
                    openai_temperature=None,
                    openai_max_tokens=None,
                    openai_stream_usage=True,
                    assistant_rag=False,
                ),
                counter=counter_for_model("gpt-4"),
            )
        ) as assistant,
    ):
        tasks = ReplyTasks()
        events = await first_delta(await start(database, assistant, tasks))

        assert await tasks.stop("s") is True
        try:
            async with asyncio.timeout(5):
                await fake.closed_by_client.wait()
        finally:
            fake.gate.set()

    assert fake.sent == 1
    [done] = [event async for event in events]
    assert isinstance(done, StreamDone)
    assert done.status == "incomplete"
    stored = await message_rows(database, "s")
    assert stored[-1]["content"] == "Partial "
    assert summary(stored[-1]["metadata"]) == STOPPED_METADATA
    assert stored[-1]["metadata"]["provider"] == "openai"


async def test_a_stop_marked_in_the_database_is_seen_at_the_heartbeat(database: Database) -> None:
    """A stop asked through another process, with no message to carry it (no bus), reaches a
    reply that sends nothing (so saves nothing) when its process next reports."""
    tasks = ReplyTasks()
    assistant = SilentAssistant()
    stream = await start(database, assistant, tasks)
    await assistant.started.wait()
    async with database.write() as conn:
        marked = await reply_queries.request_stop(conn, [stream.message_id], now=utc_now())
    assert marked == [stream.message_id]
    relay = ReplyRelay(database, tasks, None, poll_seconds=0.05, stop_wait_seconds=5)
    liveness = ProcessLiveness(
        database,
        tasks.process_id,
        heartbeat_seconds=0.05,
        stale_seconds=60,
        on_stop_requested=relay.stop_requested,
    )
    liveness.start()
    try:
        events = [event async for event in stream.events()]
    finally:
        await liveness.stop()

    assert events == [StreamDone(session_id="s", message_id=stream.message_id, status="incomplete")]
    [_, reply] = await message_rows(database, "s")
    assert summary(reply["metadata"]) == {**STOPPED_METADATA, "status": "failed"}
