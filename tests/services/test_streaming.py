"""Streamed replies: generated and saved independently of whoever is listening."""

import asyncio

from app.auth.access import Caller
from app.kit.db.engine import Database
from app.messages.schemas import ChatRequest
from app.replies.generation import ReplyTasks
from app.replies.schemas import StreamDelta, StreamDone
from app.replies.streaming import start_chat_stream
from tests.services.helpers import FailingAssistant, GatedAssistant, message_rows, session_row

OPEN = Caller.open_mode()


async def test_stream_relays_deltas_then_done_and_saves_the_reply(database: Database) -> None:
    tasks = ReplyTasks()
    assistant = GatedAssistant()
    assistant.gate.set()
    stream = await start_chat_stream(
        database,
        assistant,
        tasks,
        OPEN,
        ChatRequest(message="hi", session_id="s"),
        history_max_messages=5,
    )

    events = [event async for event in stream.events()]

    deltas = [e.content for e in events if isinstance(e, StreamDelta)]
    assert deltas == ["first ", "second ", "third"]
    assert isinstance(events[-1], StreamDone)
    stored = await message_rows(database, "s")
    assert stored[-1]["content"] == "first second third"
    assert stored[-1]["id"] == events[-1].message_id
    metadata = stored[-1]["metadata"]
    assert (metadata["provider"], metadata["model"], metadata["status"]) == (
        "gated",
        "gate-1",
        "complete",
    )
    assert metadata["finish_reason"] == "stop"
    assert metadata["latency"]["first_token_ms"] <= metadata["latency"]["total_ms"]
    assert stored[0]["id"] == stream.user_message_id


async def test_reply_is_saved_when_nobody_reads_the_stream(database: Database) -> None:
    tasks = ReplyTasks()
    assistant = GatedAssistant()
    await start_chat_stream(
        database,
        assistant,
        tasks,
        OPEN,
        ChatRequest(message="hi", session_id="s"),
        history_max_messages=5,
    )
    assistant.gate.set()
    await tasks.wait_idle()

    assert (await session_row(database, "s"))["message_count"] == 2
    assert (await message_rows(database, "s"))[-1]["content"] == "first second third"


async def test_upstream_failure_mid_stream_saves_the_partial_reply(database: Database) -> None:
    tasks = ReplyTasks()
    stream = await start_chat_stream(
        database,
        FailingAssistant(chunks_before_failure=2),
        tasks,
        OPEN,
        ChatRequest(message="hi", session_id="s"),
        history_max_messages=5,
    )

    events = [event async for event in stream.events()]

    assert [type(e).__name__ for e in events] == ["StreamDelta", "StreamDelta", "StreamError"]
    stored = await message_rows(database, "s")
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[-1]["content"] == "part0 part1 "
    assert stored[-1]["metadata"]["status"] == "incomplete"
    assert stored[-1]["metadata"]["error"] == "unavailable"


async def test_failure_before_any_token_records_a_failed_reply(database: Database) -> None:
    tasks = ReplyTasks()
    stream = await start_chat_stream(
        database, FailingAssistant(), tasks, OPEN, ChatRequest(message="hi"), history_max_messages=5
    )

    events = [event async for event in stream.events()]

    assert [type(e).__name__ for e in events] == ["StreamError"]
    stored = await message_rows(database, stream.session_id)
    assert [(m["role"], m["content"]) for m in stored] == [("user", "hi"), ("assistant", "")]
    assert stored[-1]["metadata"]["status"] == "failed"


async def test_shutdown_lets_replies_in_flight_finish(database: Database) -> None:
    tasks = ReplyTasks()
    assistant = GatedAssistant()
    await start_chat_stream(
        database,
        assistant,
        tasks,
        OPEN,
        ChatRequest(message="hi", session_id="s"),
        history_max_messages=5,
    )

    shutdown = asyncio.create_task(tasks.shutdown(grace_seconds=30))
    assert len(tasks) == 1  # shutdown is waiting for the reply
    assistant.gate.set()
    await shutdown

    assert (await message_rows(database, "s"))[-1]["content"] == "first second third"


async def test_shutdown_cancels_replies_that_outlive_the_grace_period(database: Database) -> None:
    tasks = ReplyTasks()
    await start_chat_stream(
        database, GatedAssistant(), tasks, OPEN, ChatRequest(message="hi"), history_max_messages=5
    )

    await tasks.shutdown(grace_seconds=0.01)

    assert len(tasks) == 0
