"""Shared helpers of the HTTP API tests: requests, an SSE parser, DB checks, test assistants."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select

from app.assistants import Reply, ReplyEnd, ReplyEvent, TextDelta, Turn
from app.kit.db.engine import Database
from app.kit.db.tables import chat_messages, chat_sessions
from tests.conftest import LiveServer

CHAT = "/api/v1/chat"
STREAM = "/api/v1/chat/stream"
SESSIONS = "/api/v1/chat/sessions"

CHAT_RESPONSE_KEYS = {"session_id", "response", "message_id", "user_message_id"}
SUMMARY_KEYS = {
    "session_id",
    "title",
    "title_source",
    "last_message",
    "message_count",
    "created_at",
    "updated_at",
    "pinned",
    "archived",
    # Folders and tags (issue 16).
    "folder_id",
    "tags",
}
# A session in a list: the summary, and the excerpt that matched a search (issue 5), with the
# message it shows and whether that is off the current branch (issue 13).
LIST_ITEM_KEYS = SUMMARY_KEYS | {"snippet", "match_message_id", "match_off_branch"}
# What a list item that is not a search result carries besides the summary.
NO_MATCH = {"snippet": None, "match_message_id": None, "match_off_branch": False}
# The seed's fields, then the cursor-pagination ones (issue 5).
LIST_KEYS = {"sessions", "total", "page", "page_size", "total_pages", "next_cursor", "has_more"}
# The message tree (issue 13) adds `current_message_id`, and `parent_id`, `sibling_ids`;
# feedback (issue 14) adds `feedback`.
DETAIL_KEYS = SUMMARY_KEYS | {
    "messages",
    "has_more_messages",
    "messages_before",
    "current_message_id",
}
MESSAGE_KEYS = {
    "id",
    "seq",
    "role",
    "content",
    "metadata",
    "created_at",
    "parent_id",
    "sibling_ids",
    "feedback",
}
ECHO_METADATA = {
    "provider": "echo",
    "model": "echo-1",
    "status": "complete",
    "finish_reason": "stop",
}
_SUMMARY_KEYS = ("provider", "model", "status", "finish_reason", "error")


def reply_summary(metadata: dict[str, Any]) -> dict[str, Any]:
    """The deterministic part of a message's metadata (latency varies from run to run)."""
    if metadata:
        assert set(metadata["latency"]) == {"first_token_ms", "total_ms"}
    return {key: metadata[key] for key in _SUMMARY_KEYS if key in metadata}


Json = dict[str, Any]


def session_url(session_id: str) -> str:
    return f"{SESSIONS}/{session_id}"


async def send(
    client: httpx.AsyncClient,
    message: str,
    *,
    session_id: str | None = None,
    user_id: str | None = None,
) -> Json:
    """POST /api/v1/chat, asserting a 200 of the documented shape; the response body."""
    body: Json = {"message": message}
    if session_id is not None:
        body["session_id"] = session_id
    if user_id is not None:
        body["user_id"] = user_id
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == CHAT_RESPONSE_KEYS
    assert isinstance(data["session_id"], str)
    assert isinstance(data["response"], str)
    uuid.UUID(data["message_id"])
    if session_id is not None:
        assert data["session_id"] == session_id
    return data


async def get_session(client: httpx.AsyncClient, session_id: str) -> Json:
    response = await client.get(session_url(session_id))
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == DETAIL_KEYS
    for message in data["messages"]:
        assert set(message) == MESSAGE_KEYS
    return data


async def list_sessions(client: httpx.AsyncClient, **params: str | int) -> Json:
    response = await client.get(SESSIONS, params=params)
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == LIST_KEYS
    for summary in data["sessions"]:
        assert set(summary) == LIST_ITEM_KEYS
    return data


def parse_utc(value: object) -> datetime:
    """An API timestamp: ISO 8601 in UTC, written with a trailing "Z"."""
    assert isinstance(value, str)
    assert value.endswith("Z"), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None
    assert parsed.utcoffset() == UTC.utcoffset(None)
    return parsed


def echo_reply(message: str, user_messages_seen: int) -> str:
    """What the echo assistant answers: the contract the assertions below rely on."""
    return (
        f'You said: "{message.strip()}". '
        f"I can see {user_messages_seen} of your messages in this conversation. "
        "(This is the offline echo assistant; configure a model provider for real answers.)"
    )


async def count_rows(database: Database) -> tuple[int, int]:
    """(sessions, messages) stored."""
    async with database.read() as conn:
        sessions = (
            await conn.execute(select(func.count()).select_from(chat_sessions))
        ).scalar_one()
        messages = (
            await conn.execute(select(func.count()).select_from(chat_messages))
        ).scalar_one()
    return int(sessions), int(messages)


async def stored_messages(database: Database, session_id: str) -> list[Json]:
    """The session's rows in chat_messages, by seq, siblings (one seq) in the order they were
    written (a regenerated reply beside the first one: their order was the planner's)."""
    async with database.read() as conn:
        rows = await conn.execute(
            select(
                chat_messages.c.id,
                chat_messages.c.seq,
                chat_messages.c.role,
                chat_messages.c.content,
                chat_messages.c.metadata,
            )
            .where(chat_messages.c.session_id == session_id)
            .order_by(chat_messages.c.seq, chat_messages.c.ordinal)
        )
        return [dict(row) for row in rows.mappings()]


# --- Server-Sent Events -------------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: Json
    id: str | None = None


class SseParser:
    """A text/event-stream parser: `event:` and `data:` fields, events end at a blank line.

    Comments (`:` lines, e.g. keep-alive pings) are ignored. Data must be a JSON object.
    """

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        """One line without its terminator; the event it completes, if any."""
        if line == "":
            if not self._data and self._event is None:
                return None
            event = SseEvent(
                event=self._event or "message", data=json.loads("\n".join(self._data)), id=self._id
            )
            assert isinstance(event.data, dict), event
            self._event, self._data, self._id = None, [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None

    @property
    def pending(self) -> bool:
        """Whether an event was started but not terminated by a blank line."""
        return self._event is not None or bool(self._data) or self._id is not None


def parse_sse(text: str) -> list[SseEvent]:
    parser = SseParser()
    events = [
        event
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if (event := parser.feed(line)) is not None
    ]
    assert not parser.pending, "stream ended inside an event"
    return events


@dataclass(frozen=True)
class StreamResult:
    response: httpx.Response
    events: list[SseEvent]

    @property
    def names(self) -> list[str]:
        return [event.event for event in self.events]

    @property
    def text(self) -> str:
        """The concatenated `delta` contents."""
        return "".join(e.data["content"] for e in self.events if e.event == "delta")


async def send_stream(client: httpx.AsyncClient, body: Json) -> StreamResult:
    """POST /api/v1/chat/stream and read the whole event stream."""
    response = await client.post(STREAM, json=body)
    assert response.status_code == 200, response.text
    return StreamResult(response=response, events=parse_sse(response.text))


def assert_stream_succeeded(result: StreamResult) -> tuple[SseEvent, SseEvent]:
    """One `session` first, one or more `delta`, one `done` last: (session, done)."""
    names = result.names
    assert names[0] == "session", names
    assert names[-1] == "done", names
    assert names.count("session") == 1, names
    assert names.count("done") == 1, names
    assert set(names[1:-1]) == {"delta"}, names
    started, done = result.events[0], result.events[-1]
    assert set(started.data) == {"session_id", "user_message_id", "message_id"}
    assert set(done.data) == {"session_id", "message_id", "status"}
    assert done.data["status"] == "complete"
    assert done.data["session_id"] == started.data["session_id"]
    for event in result.events[1:-1]:
        assert set(event.data) == {"content"}
        assert isinstance(event.data["content"], str)
    return started, done


# Far more than any event takes, even on a loaded 2-core machine.
STREAM_WAIT_SECONDS = 60


@dataclass
class OpenStream:
    """A stream being read event by event."""

    lines: AsyncIterator[str]
    events: list[SseEvent] = field(default_factory=list)
    _parser: SseParser = field(default_factory=SseParser)

    async def read_until(self, name: str | None = None) -> list[SseEvent]:
        """Events up to the first named `name` (to the end of the stream if None). An event
        that never comes fails the test (after STREAM_WAIT_SECONDS) instead of hanging it."""
        start = len(self.events)
        async with asyncio.timeout(STREAM_WAIT_SECONDS):
            async for line in self.lines:
                if (event := self._parser.feed(line)) is not None:
                    self.events.append(event)
                    if event.event == name:
                        break
        return self.events[start:]

    @property
    def text(self) -> str:
        """The concatenated `delta` contents read so far."""
        return "".join(e.data["content"] for e in self.events if e.event == "delta")


@asynccontextmanager
async def open_stream(
    live_server: LiveServer, body: Json, headers: dict[str, str] | None = None
) -> AsyncIterator[OpenStream]:
    """POST /stream on a connection of its own, read as the test goes."""
    async with (
        httpx.AsyncClient(base_url=live_server.base_url, timeout=10) as stream_client,
        stream_client.stream("POST", STREAM, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        yield OpenStream(response.aiter_lines())


def resume_url(session_id: str) -> str:
    return f"{session_url(session_id)}/stream"


@asynccontextmanager
async def resumed(
    live_server: LiveServer,
    session_id: str,
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[OpenStream]:
    """GET .../stream on a connection of its own, read as the test goes."""
    sent = dict(headers or {})
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    async with (
        httpx.AsyncClient(base_url=live_server.base_url, timeout=10) as stream_client,
        stream_client.stream("GET", resume_url(session_id), headers=sent) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].split(";")[0] == "text/event-stream"
        yield OpenStream(response.aiter_lines())


# --- Test assistants ----------------------------------------------------------------------

TEST_METADATA = {"provider": "test", "model": "test-1"}


class ScriptedAssistant:
    """An assistant for tests, with the interface of the echo assistant.

    `stream` yields `chunks[0]`, then waits for `gate` (if any) before the rest, then raises
    `fail_with` (if any). `reply` returns all chunks joined, or raises `fail_with`; with
    `hold_reply`, only once `gate` is set. `asked` is set at the first call.
    """

    def __init__(
        self,
        chunks: Sequence[str],
        *,
        gate: asyncio.Event | None = None,
        fail_with: Exception | None = None,
        hold_reply: bool = False,
    ) -> None:
        self.chunks = list(chunks)
        self.gate = gate
        self.fail_with = fail_with
        self.hold_reply = hold_reply
        self.calls = 0
        self.asked = asyncio.Event()

    provider = TEST_METADATA["provider"]
    model = TEST_METADATA["model"]

    async def aclose(self) -> None:
        """Holds nothing open."""

    async def reply(self, history: Sequence[Turn]) -> Reply:
        self.calls += 1
        self.asked.set()
        if self.hold_reply and self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return Reply(content="".join(self.chunks), end=ReplyEnd(model=TEST_METADATA["model"]))

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        self.calls += 1
        self.asked.set()
        for index, chunk in enumerate(self.chunks):
            if index == 1 and self.gate is not None:
                await self.gate.wait()
            yield TextDelta(chunk)
        if self.fail_with is not None:
            raise self.fail_with
        yield ReplyEnd(model=TEST_METADATA["model"])


@contextmanager
def use_assistant(live_server: LiveServer, assistant: ScriptedAssistant) -> Iterator[None]:
    """Serve requests with `assistant` instead of the configured one, for the block."""
    original = live_server.app.state.assistant
    live_server.app.state.assistant = assistant
    try:
        yield
    finally:
        if assistant.gate is not None:
            # Never leave a reply waiting forever: the client fixture waits for replies.
            assistant.gate.set()
        live_server.app.state.assistant = original
