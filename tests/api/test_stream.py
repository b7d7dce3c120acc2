"""POST /api/v1/chat/stream: the event stream, what it stores, disconnects and failures."""

import asyncio
import time
import uuid

import httpx

from app.kit.db.engine import Database
from app.kit.errors import AssistantUnavailable
from app.kit.text import make_preview, make_title
from tests.api.helpers import (
    ECHO_METADATA,
    STREAM,
    TEST_METADATA,
    ScriptedAssistant,
    SseEvent,
    SseParser,
    assert_stream_succeeded,
    count_rows,
    echo_reply,
    get_session,
    list_sessions,
    parse_sse,
    reply_summary,
    send,
    send_stream,
    stored_messages,
    use_assistant,
)
from tests.conftest import LiveServer


def test_sse_parser() -> None:
    text = (
        ": ping\n\n"
        'event: session\r\ndata: {"a": 1}\r\n\r\n'
        'event:delta\ndata: {"content":\n'
        'data: "x"}\n\n'
        "data: {}\n\n"
    )

    assert parse_sse(text) == [
        SseEvent("session", {"a": 1}),
        SseEvent("delta", {"content": "x"}),
        SseEvent("message", {}),
    ]


async def test_stream_events_and_what_is_stored(
    client: httpx.AsyncClient, database: Database
) -> None:
    result = await send_stream(client, {"message": "Stream this, please"})

    assert result.response.headers["content-type"].split(";")[0] == "text/event-stream"
    assert result.response.headers["cache-control"] == "no-cache"
    started, done = assert_stream_succeeded(result)
    session_id = started.data["session_id"]
    assert str(uuid.UUID(session_id)) == session_id
    assert result.names.count("delta") > 1
    assert result.text == echo_reply("Stream this, please", 1)

    session = await get_session(client, session_id)
    assert session["message_count"] == 2
    user, assistant = session["messages"]
    assert (user["id"], user["role"], user["content"]) == (
        started.data["user_message_id"],
        "user",
        "Stream this, please",
    )
    assert (assistant["id"], assistant["role"], assistant["content"]) == (
        done.data["message_id"],
        "assistant",
        result.text,
    )
    assert reply_summary(assistant["metadata"]) == ECHO_METADATA
    assert session["title"] == "Stream this, please"
    assert session["last_message"] == make_preview(result.text)
    assert [r["seq"] for r in await stored_messages(database, session_id)] == [1, 2]


async def test_stream_updates_the_list_like_the_plain_endpoint(client: httpx.AsyncClient) -> None:
    await send(client, "plain message", session_id="plain")
    result = await send_stream(client, {"message": "plain message", "session_id": "streamed"})
    assert_stream_succeeded(result)

    listed = await list_sessions(client)

    assert [s["session_id"] for s in listed["sessions"]] == ["streamed", "plain"]
    streamed, plain = listed["sessions"]
    for key in ("title", "last_message", "message_count"):
        assert streamed[key] == plain[key], key


async def test_stream_continues_a_session_with_its_history(client: httpx.AsyncClient) -> None:
    await send(client, "first, plain", session_id="s")
    await send_stream(client, {"message": "second, streamed", "session_id": "s"})

    result = await send_stream(client, {"message": "third, streamed", "session_id": "s"})

    started, _ = assert_stream_succeeded(result)
    assert started.data["session_id"] == "s"
    assert result.text == echo_reply("third, streamed", 3)
    session = await get_session(client, "s")
    assert session["message_count"] == 6
    assert session["title"] == "first, plain"
    assert [m["role"] for m in session["messages"]] == ["user", "assistant"] * 3


async def test_stream_stores_user_id(client: httpx.AsyncClient) -> None:
    result = await send_stream(client, {"message": "hi", "user_id": "alice"})
    started, _ = assert_stream_succeeded(result)

    listed = await list_sessions(client, user_id="alice")

    assert [s["session_id"] for s in listed["sessions"]] == [started.data["session_id"]]


async def test_stream_validation_error_is_plain_json_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    response = await client.post(STREAM, json={"message": ""})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "message"]
    assert await count_rows(database) == (0, 0)


async def _wait_until_closed(live_server: LiveServer, connection: object) -> None:
    """Until the server has seen the connection close (uvicorn exposes no event for it)."""
    deadline = time.monotonic() + 5
    while connection in live_server.server.server_state.connections:
        assert time.monotonic() < deadline, "the server did not see the client disconnect"
        await asyncio.sleep(0.01)


async def test_reply_is_completed_and_saved_after_the_client_disconnects(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["first ", "second ", "third"], gate=gate)
    connections = live_server.server.server_state.connections

    with use_assistant(live_server, assistant):
        before = set(connections)
        stream_client = httpx.AsyncClient(base_url=live_server.base_url, timeout=10)
        try:
            async with stream_client.stream(
                "POST", STREAM, json={"message": "hello", "session_id": "gone-away"}
            ) as response:
                assert response.status_code == 200
                parser = SseParser()
                events: list[SseEvent] = []
                async for line in response.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        events.append(event)
                        if event.event == "delta":
                            break
                [stream_connection] = set(connections) - before
                await response.aclose()
        finally:
            await stream_client.aclose()
        assert [e.event for e in events] == ["session", "delta"]
        assert events[1].data == {"content": "first "}

        await _wait_until_closed(live_server, stream_connection)
        # The reply is still waiting for the assistant: stored, and marked as generating.
        stored = await stored_messages(database, "gone-away")
        assert [r["role"] for r in stored] == ["user", "assistant"]
        assert stored[1]["metadata"]["status"] == "generating"

        gate.set()
        async with asyncio.timeout(5):
            await live_server.app.state.reply_tasks.wait_idle()

    session = await get_session(client, "gone-away")
    assert session["message_count"] == 2
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "hello"),
        ("assistant", "first second third"),
    ]
    assert reply_summary(session["messages"][1]["metadata"]) == {
        **TEST_METADATA,
        "status": "complete",
        "finish_reason": "stop",
    }
    assert session["last_message"] == "first second third"
    assert assistant.calls == 1


async def test_assistant_failing_mid_stream_sends_error_and_keeps_the_partial_reply(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    assistant = ScriptedAssistant(["partial ", "answer"], fail_with=RuntimeError("boom"))

    with use_assistant(live_server, assistant):
        result = await send_stream(client, {"message": "question", "session_id": "s"})

    assert result.names == ["session", "delta", "delta", "error"]
    assert result.events[-1].data == {"detail": AssistantUnavailable.detail}
    assert result.text == "partial answer"
    session = await get_session(client, "s")
    assert session["message_count"] == 2
    user, partial = session["messages"]
    assert (user["id"], user["role"], user["content"]) == (
        result.events[0].data["user_message_id"],
        "user",
        "question",
    )
    assert (partial["role"], partial["content"]) == ("assistant", "partial answer")
    assert reply_summary(partial["metadata"]) == {
        "provider": "test",
        "model": "test-1",
        "status": "incomplete",
        "finish_reason": "error",
        "error": "unavailable",
    }
    assert session["last_message"] == "partial answer"


async def test_assistant_failing_before_any_text_records_a_failed_reply(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    assistant = ScriptedAssistant([], fail_with=RuntimeError("boom"))

    with use_assistant(live_server, assistant):
        result = await send_stream(client, {"message": "question", "session_id": "s"})

    assert result.names == ["session", "error"]
    assert result.events[-1].data == {"detail": AssistantUnavailable.detail}
    session = await get_session(client, "s")
    assert session["message_count"] == 2
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "question"),
        ("assistant", ""),
    ]
    assert session["messages"][1]["metadata"]["status"] == "failed"
    assert session["title"] == make_title("question")
    assert session["last_message"] == "question"
