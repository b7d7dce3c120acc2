"""The app with ASSISTANT_PROVIDER=openai, over HTTP, against the fake OpenAI-compatible server
on loopback: what is stored with each reply, upstream failures, disconnects and cut streams."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.config import PROJECT_ROOT, Settings
from app.kit.db.engine import Database
from app.kit.errors import AssistantTimedOut, AssistantUnavailable
from app.kit.text import make_preview, make_title
from app.main import create_app
from tests.api.helpers import (
    CHAT,
    STREAM,
    Json,
    SseEvent,
    SseParser,
    assert_stream_succeeded,
    get_session,
    send,
    send_stream,
    stored_messages,
)
from tests.conftest import LiveServer, make_settings, serve
from tests.fakes.fixtures import RunningFake, release, running_fake
from tests.fakes.openai_server import TITLE_MODEL, Behaviour, Fail, Respond

FAKE_REPLY = "Hello from the fake."
FAKE_CHUNKS = ["Hello ", "from ", "the ", "fake."]
FAKE_USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
SYSTEM_PROMPT = "You answer questions about Acme Pay."
COMPLETE = {
    "provider": "openai",
    "model": "fake-model-1",
    "status": "complete",
    "finish_reason": "stop",
    "usage": FAKE_USAGE,
}
# Small enough for tests, and far above what a loopback reply takes.
SHORT_TIMEOUT = 0.3


@pytest.fixture(scope="module")
async def fake_server() -> AsyncIterator[RunningFake]:
    async with running_fake() as running:
        yield running


@pytest.fixture
def upstream(fake_server: RunningFake) -> RunningFake:
    """The module's fake, reset: nothing scripted, nothing recorded."""
    fake_server.fake.reset()
    return fake_server


@asynccontextmanager
async def openai_app(
    settings: Settings, upstream: RunningFake, **overrides: Any
) -> AsyncIterator[LiveServer]:
    """The app answering through the fake, on the test's database, served on loopback.

    Leaves only once no reply (nor title) is being generated any more, so none writes into the
    tables of the next test."""
    values: dict[str, Any] = {
        "assistant_provider": "openai",
        "openai_base_url": upstream.api_url,
        "openai_model": "gpt-4",
        # Title requests go to the fake's own script (by default: no title).
        "title_model": TITLE_MODEL,
        "openai_max_retries": 1,
        "openai_timeout_seconds": 5,
        "assistant_rag": False,
        "knowledge_base_dir": str(PROJECT_ROOT / "knowledge"),
        "assistant_system_prompt": SYSTEM_PROMPT,
        # Explicit, so that no OPENAI_* variable of the environment leaks in.
        "openai_api_key": None,
        "openai_temperature": None,
        "openai_max_tokens": None,
        "openai_stream_usage": True,
    }
    values.update(overrides)
    async with serve(create_app(make_settings(settings.database_url, **values))) as live:
        try:
            yield live
        finally:
            async with asyncio.timeout(10):
                await live.app.state.reply_tasks.wait_idle()
                await live.app.state.title_tasks.wait_idle()


@pytest.fixture
async def live(
    settings: Settings, database: Database, upstream: RunningFake
) -> AsyncIterator[LiveServer]:
    """The app with the default test configuration: no RAG, one retry, a 5 s timeout."""
    async with openai_app(settings, upstream) as served:
        yield served


def assert_complete(metadata: Json, *, sources: list[Json] | None = None) -> None:
    assert {key: metadata[key] for key in COMPLETE} == COMPLETE
    assert metadata["sources"] == (sources or [])
    assert "error" not in metadata
    latency = metadata["latency"]
    assert set(latency) == {"first_token_ms", "total_ms"}
    assert isinstance(latency["first_token_ms"], int)
    assert isinstance(latency["total_ms"], int)
    assert 0 <= latency["first_token_ms"] <= latency["total_ms"]


def assert_ended_early(metadata: Json, *, status: str, error: str) -> None:
    """A reply that failed or stopped part-way: its status, why, and no usage or sources."""
    assert metadata["provider"] == "openai"
    assert metadata["status"] == status
    assert metadata["error"] == error
    assert metadata["finish_reason"] == "error"
    assert metadata["usage"] is None
    assert metadata["sources"] == []
    assert isinstance(metadata["latency"]["total_ms"], int)


def sent_history(upstream: RunningFake, index: int = -1) -> list[tuple[str, str]]:
    """The messages of one upstream request, after the system prompt."""
    messages = upstream.sent_messages(index)
    assert messages[0] == ("system", SYSTEM_PROMPT)
    return messages[1:]


# --- Replies and their metadata -------------------------------------------------------------


async def test_plain_chat_stores_the_reply_with_its_metadata(
    live: LiveServer, upstream: RunningFake
) -> None:
    data = await send(live.client, "Hi there", session_id="s")

    assert data["response"] == FAKE_REPLY
    session = await get_session(live.client, "s")
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "Hi there"),
        ("assistant", FAKE_REPLY),
    ]
    reply = session["messages"][1]
    assert reply["id"] == data["message_id"]
    assert_complete(reply["metadata"])
    [body] = upstream.fake.requests
    assert body["model"] == "gpt-4"
    assert not body.get("stream")
    assert sent_history(upstream) == [("user", "Hi there")]
    assert session["message_count"] == 2
    assert session["last_message"] == FAKE_REPLY


async def test_streamed_chat_stores_the_reply_with_its_metadata(
    live: LiveServer, upstream: RunningFake
) -> None:
    result = await send_stream(live.client, {"message": "Hi there", "session_id": "s"})

    _, done = assert_stream_succeeded(result)
    assert [e.data["content"] for e in result.events[1:-1]] == FAKE_CHUNKS
    session = await get_session(live.client, "s")
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "Hi there"),
        ("assistant", FAKE_REPLY),
    ]
    reply = session["messages"][1]
    assert reply["id"] == done.data["message_id"]
    assert_complete(reply["metadata"])
    [body] = upstream.fake.requests
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert sent_history(upstream) == [("user", "Hi there")]
    assert session["last_message"] == FAKE_REPLY


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_with_rag_the_sources_used_are_stored_with_the_reply(
    settings: Settings, database: Database, upstream: RunningFake, streamed: bool
) -> None:
    question = "Which payment processors do you support?"
    async with openai_app(settings, upstream, assistant_rag=True) as live:
        if streamed:
            assert_stream_succeeded(
                await send_stream(live.client, {"message": question, "session_id": "s"})
            )
        else:
            await send(live.client, question, session_id="s")
        session = await get_session(live.client, "s")

    metadata = session["messages"][1]["metadata"]
    sources = metadata["sources"]
    assert_complete(metadata, sources=sources)
    assert sources, "no sources were stored"
    assert {key: sources[0][key] for key in ("title", "path")} == {
        "title": "Payments > Supported payment processors",
        "path": "payments.md#supported-payment-processors",
    }
    for source in sources:
        assert set(source) == {"title", "path", "score"}
        assert isinstance(source["score"], float)
    [(role, prompt), user] = upstream.sent_messages()
    assert role == "system"
    assert prompt.startswith(SYSTEM_PROMPT)
    for number, source in enumerate(sources, start=1):
        assert f"[{number}] {source['title']} ({source['path']})\n" in prompt
    assert "Stripe, Adyen and PayPal" in prompt
    assert user == ("user", question)


# --- Upstream failures ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_exhausted_retries_give_502_and_a_failed_reply_in_the_history(
    live: LiveServer, upstream: RunningFake, database: Database, status: int
) -> None:
    upstream.fake.default = Fail(status)

    response = await live.client.post(CHAT, json={"message": "are you there?", "session_id": "s"})

    assert response.status_code == 502
    assert response.json() == {"detail": AssistantUnavailable.detail}
    assert len(upstream.fake.requests) == 2  # OPENAI_MAX_RETRIES=1
    session = await get_session(live.client, "s")
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "are you there?"),
        ("assistant", ""),
    ]
    assert_ended_early(session["messages"][1]["metadata"], status="failed", error="unavailable")
    assert session["message_count"] == 2
    assert session["last_message"] == "are you there?"
    assert session["title"] == make_title("are you there?")
    assert len(await stored_messages(database, "s")) == 2


async def test_a_timeout_gives_504_and_a_failed_reply_in_the_history(
    settings: Settings, database: Database, upstream: RunningFake
) -> None:
    gate = asyncio.Event()
    upstream.fake.default = Respond(before_first_chunk=gate)
    try:
        async with openai_app(
            settings, upstream, openai_timeout_seconds=SHORT_TIMEOUT, openai_max_retries=0
        ) as live:
            response = await live.client.post(CHAT, json={"message": "slow?", "session_id": "s"})
            session = await get_session(live.client, "s")
    finally:
        release(gate)

    assert response.status_code == 504
    assert response.json() == {"detail": AssistantTimedOut.detail}
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "slow?"),
        ("assistant", ""),
    ]
    assert_ended_early(session["messages"][1]["metadata"], status="failed", error="timeout")
    assert session["message_count"] == 2
    assert session["last_message"] == "slow?"


@pytest.mark.parametrize("kind", ["unavailable", "timeout"])
async def test_stream_failing_before_any_token_sends_an_error_event_and_stores_a_failed_reply(
    settings: Settings, database: Database, upstream: RunningFake, kind: str
) -> None:
    gate = asyncio.Event()
    upstream.fake.default = Fail(500) if kind == "unavailable" else Respond(before_first_chunk=gate)
    try:
        async with openai_app(settings, upstream, openai_timeout_seconds=SHORT_TIMEOUT) as live:
            result = await send_stream(live.client, {"message": "anyone?", "session_id": "s"})
            session = await get_session(live.client, "s")
    finally:
        release(gate)

    assert result.names == ["session", "error"]
    detail = AssistantUnavailable.detail if kind == "unavailable" else AssistantTimedOut.detail
    assert result.events[-1].data == {"detail": detail}
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "anyone?"),
        ("assistant", ""),
    ]
    assert session["messages"][0]["id"] == result.events[0].data["user_message_id"]
    assert_ended_early(session["messages"][1]["metadata"], status="failed", error=kind)
    assert session["message_count"] == 2
    assert session["last_message"] == "anyone?"


@pytest.mark.parametrize(
    ("behaviour", "arrived"),
    [
        (Respond(cut_after=2), FAKE_CHUNKS[:2]),
        (Respond(malformed_line="{not json"), FAKE_CHUNKS[:1]),
        (Respond(malformed_line="null"), FAKE_CHUNKS[:1]),
        (Respond(finish_reason=None), FAKE_CHUNKS),
    ],
    ids=["cut", "malformed", "wrong-shape", "no-finish-reason"],
)
async def test_a_stream_broken_mid_way_keeps_what_arrived_as_incomplete(
    live: LiveServer, upstream: RunningFake, behaviour: Behaviour, arrived: list[str]
) -> None:
    upstream.fake.queue(behaviour)

    result = await send_stream(live.client, {"message": "tell me", "session_id": "s"})

    assert result.names == ["session", *(["delta"] * len(arrived)), "error"]
    assert result.text == "".join(arrived)
    assert result.events[-1].data == {"detail": AssistantUnavailable.detail}
    session = await get_session(live.client, "s")
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "tell me"),
        ("assistant", "".join(arrived)),
    ]
    metadata = session["messages"][1]["metadata"]
    assert_ended_early(metadata, status="incomplete", error="unavailable")
    assert isinstance(metadata["latency"]["first_token_ms"], int)
    assert session["message_count"] == 2
    assert session["last_message"] == make_preview("".join(arrived))
    assert len(upstream.fake.requests) == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["failed", "incomplete"])
async def test_a_reply_that_ended_early_still_records_the_model(
    live: LiveServer, upstream: RunningFake, streamed: bool
) -> None:
    if streamed:
        upstream.fake.queue(Respond(cut_after=2))
        await send_stream(live.client, {"message": "hi", "session_id": "s"})
    else:
        upstream.fake.default = Fail(500)
        assert (await live.client.post(CHAT, json={"message": "hi", "session_id": "s"})).is_error

    metadata = (await get_session(live.client, "s"))["messages"][1]["metadata"]
    assert metadata["status"] == ("incomplete" if streamed else "failed")
    assert metadata["model"] in {"gpt-4", "fake-model-1"}


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_a_follow_up_after_a_failed_reply_sends_the_history_without_it(
    live: LiveServer, upstream: RunningFake, streamed: bool
) -> None:
    upstream.fake.queue(Fail(500), Fail(500))
    assert (
        await live.client.post(CHAT, json={"message": "first", "session_id": "s"})
    ).status_code == 502

    if streamed:
        assert_stream_succeeded(
            await send_stream(live.client, {"message": "second", "session_id": "s"})
        )
    else:
        await send(live.client, "second", session_id="s")

    assert len(upstream.fake.requests) == 3
    assert sent_history(upstream) == [("user", "first"), ("user", "second")]
    session = await get_session(live.client, "s")
    assert [
        (m["role"], m["content"], m["metadata"].get("status")) for m in session["messages"]
    ] == [
        ("user", "first", None),
        ("assistant", "", "failed"),
        ("user", "second", None),
        ("assistant", FAKE_REPLY, "complete"),
    ]
    assert session["message_count"] == 4
    assert session["last_message"] == FAKE_REPLY


# --- Client disconnects ---------------------------------------------------------------------


async def _wait_until_closed(live: LiveServer, connection: object) -> None:
    """Until the server has seen the connection close (uvicorn exposes no event for it)."""
    deadline = time.monotonic() + 5
    while connection in live.server.server_state.connections:
        assert time.monotonic() < deadline, "the server did not see the client disconnect"
        await asyncio.sleep(0.01)


async def test_a_reply_is_completed_and_saved_after_the_client_disconnects(
    live: LiveServer, upstream: RunningFake, database: Database
) -> None:
    gate = asyncio.Event()
    upstream.fake.queue(Respond(before_first_chunk=gate))
    connections = live.server.server_state.connections
    before = set(connections)
    try:
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=10) as stream_client,
            stream_client.stream(
                "POST", STREAM, json={"message": "hello", "session_id": "gone"}
            ) as response,
        ):
            assert response.status_code == 200
            parser = SseParser()
            events: list[SseEvent] = []
            async for line in response.aiter_lines():
                if (event := parser.feed(line)) is not None:
                    events.append(event)
                    break
            [stream_connection] = set(connections) - before
        assert [e.event for e in events] == ["session"]
        await _wait_until_closed(live, stream_connection)
        # The upstream has not answered yet: the user's message is stored, and the reply as it
        # started (its row is inserted before the upstream is asked), empty and generating.
        deadline = time.monotonic() + 5
        while not upstream.fake.requests:
            assert time.monotonic() < deadline, "the upstream was not asked"
            await asyncio.sleep(0.01)
        stored = await stored_messages(database, "gone")
        assert [(r["role"], r["content"], r["metadata"].get("status")) for r in stored] == [
            ("user", "hello", None),
            ("assistant", "", "generating"),
        ]
    finally:
        release(gate)
    async with asyncio.timeout(5):
        await live.app.state.reply_tasks.wait_idle()

    session = await get_session(live.client, "gone")
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "hello"),
        ("assistant", FAKE_REPLY),
    ]
    assert_complete(session["messages"][1]["metadata"])
    assert session["message_count"] == 2
    assert session["last_message"] == FAKE_REPLY
    assert len(upstream.fake.requests) == 1
