"""Titles written by the model, over HTTP, against the fake OpenAI-compatible server: beside the
first reply (`event: title` before `done`, or the next list), the seed's title whenever the
model's cannot be had, a rename that races the title, stop and shutdown, and on demand
(POST .../title). Both databases."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.config import PROJECT_ROOT, Settings
from app.kit.db.engine import Database
from app.kit.db.types import utc_now
from app.kit.errors import NothingToTitle, TitlesNotWritten, TitleTimedOut, TitleUnavailable
from app.kit.text import make_title
from app.main import create_app
from app.messages import service as message_service
from app.sessions import queries as session_queries
from tests.api.helpers import (
    CHAT,
    SESSIONS,
    STREAM,
    Json,
    SseEvent,
    get_session,
    list_sessions,
    send,
    send_stream,
    session_url,
)
from tests.api.test_openai_provider import openai_app
from tests.conftest import LiveServer, make_settings, serve
from tests.fakes.fixtures import RunningFake, running_fake
from tests.fakes.openai_server import TITLE_MODEL, Behaviour, Fail, Respond
from tests.service_process import next_event, remaining_events, sse_events

FIRST_MESSAGE = "Je pars à Paris en mai : que faut-il absolument visiter ?"
SEED_TITLE = make_title(FIRST_MESSAGE)
PROMPT = (PROJECT_ROOT / "app" / "titles" / "prompt.txt").read_text(encoding="utf-8").strip()
# Far below the default, far above what a loopback answer takes; only held answers reach it.
SHORT_TIMEOUT = 0.5


@pytest.fixture(scope="module")
async def fake_server() -> AsyncIterator[RunningFake]:
    async with running_fake() as running:
        yield running


@pytest.fixture
def upstream(fake_server: RunningFake) -> RunningFake:
    fake_server.fake.reset()
    return fake_server


@pytest.fixture
async def live(
    settings: Settings, database: Database, upstream: RunningFake
) -> AsyncIterator[LiveServer]:
    async with openai_app(settings, upstream) as served:
        yield served


class Gates:
    """Events that hold answers of the fake back; all released when the test ends, before
    the app waits for its tasks."""

    def __init__(self) -> None:
        self._events: list[asyncio.Event] = []

    def new(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.append(event)
        return event

    def release_all(self) -> None:
        for event in self._events:
            event.set()


@pytest.fixture
def gates(live: LiveServer) -> Iterator[Gates]:
    held = Gates()
    yield held
    held.release_all()


def title_url(session_id: str) -> str:
    return f"{session_url(session_id)}/title"


async def settled(live: LiveServer) -> None:
    async with asyncio.timeout(10):
        await live.app.state.reply_tasks.wait_idle()
        await live.app.state.title_tasks.wait_idle()


async def summary_of(client: httpx.AsyncClient, session_id: str) -> tuple[str, str]:
    """(title, title_source) in the detail, checked against the list's."""
    detail = await get_session(client, session_id)
    listed = {s["session_id"]: s for s in (await list_sessions(client))["sessions"]}
    assert (listed[session_id]["title"], listed[session_id]["title_source"]) == (
        detail["title"],
        detail["title_source"],
    )
    return detail["title"], detail["title_source"]


async def found_by(client: httpx.AsyncClient, q: str) -> list[str]:
    response = await client.get(SESSIONS, params={"q": q})
    assert response.status_code == 200, response.text
    return [s["session_id"] for s in response.json()["sessions"]]


async def arrived(event: asyncio.Event) -> None:
    async with asyncio.timeout(10):
        await event.wait()


# --- Beside the first reply ---------------------------------------------------------------


async def test_a_title_ready_before_the_reply_ends_is_sent_before_done(
    live: LiveServer, upstream: RunningFake, gates: Gates
) -> None:
    reply_paused = gates.new()
    upstream.fake.queue(
        Respond(chunks=["Le Louvre, ", "et Montmartre."], pause_after=1, resume=reply_paused)
    )
    upstream.fake.title_default = Respond(chunks=["Title: «Voyage à Paris» 🗼\nBecause it is."])

    async with live.client.stream(
        "POST", STREAM, json={"message": FIRST_MESSAGE, "session_id": "trip"}
    ) as response:
        assert response.status_code == 200
        events = sse_events(response)
        before: list[SseEvent] = []
        while (event := await next_event(events)).event != "title":
            before.append(event)
        # The title is written when it is sent; the reply goes on.
        assert await summary_of(live.client, "trip") == ("Voyage à Paris", "model")
        reply_paused.set()
        after = [event async for event in remaining_events(events)]

    assert before[0].event == "session"
    assert {e.event for e in before[1:]} <= {"delta"}
    assert event.data == {"session_id": "trip", "title": "Voyage à Paris"}
    assert [e.event for e in after][-1] == "done"
    assert {e.event for e in after[:-1]} <= {"delta"}
    assert after[-1].data["status"] == "complete"
    # One title request, beside the one chat request, with the prompt and the first message.
    [request] = upstream.fake.title_requests
    assert len(upstream.fake.requests) == 1
    assert request["model"] == TITLE_MODEL
    assert request["stream"] is False
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["messages"][0]["content"] == PROMPT
    assert request["messages"][1]["content"] == f"User: {FIRST_MESSAGE}"
    # The search index has the model's title, not the seed's.
    assert await found_by(live.client, "voyage") == ["trip"]
    assert await found_by(live.client, "absolument") == ["trip"]  # the message itself


async def test_a_slow_title_comes_after_done_and_the_next_list_shows_it(
    live: LiveServer, upstream: RunningFake, gates: Gates
) -> None:
    title_held = gates.new()
    upstream.fake.title_default = Respond(
        chunks=["Visiter Paris en mai"], before_first_chunk=title_held
    )

    result = await send_stream(live.client, {"message": FIRST_MESSAGE, "session_id": "trip"})

    assert "title" not in result.names
    assert result.names[0] == "session"
    assert result.names[-1] == "done"
    await arrived(upstream.fake.title_arrived)
    assert await summary_of(live.client, "trip") == (SEED_TITLE, "message")
    title_held.set()
    await settled(live)
    assert await summary_of(live.client, "trip") == ("Visiter Paris en mai", "model")


async def test_a_plain_reply_does_not_wait_for_the_title(
    live: LiveServer, upstream: RunningFake, gates: Gates
) -> None:
    title_held = gates.new()
    upstream.fake.title_default = Respond(
        chunks=["Visiter Paris en mai"], before_first_chunk=title_held
    )

    reply = await send(live.client, FIRST_MESSAGE, session_id="trip")

    assert reply["response"] == "Hello from the fake."
    await arrived(upstream.fake.title_arrived)
    assert await summary_of(live.client, "trip") == (SEED_TITLE, "message")
    title_held.set()
    await settled(live)
    assert await summary_of(live.client, "trip") == ("Visiter Paris en mai", "model")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Fail(500), id="http-500"),
        pytest.param(Fail(400), id="http-400"),
        pytest.param(Respond(chunks=[]), id="empty"),
        pytest.param(Respond(chunks=["  \n\n  "]), id="blank"),
        pytest.param(Respond(chunks=['**"🎉🎉"**']), id="only-markup-and-emoji"),
        pytest.param(Respond(chunks=["Title:"]), id="only-a-label"),
    ],
)
async def test_the_seed_title_stands_when_the_models_cannot_be_had(
    live: LiveServer, upstream: RunningFake, answer: Behaviour
) -> None:
    upstream.fake.title_default = answer

    result = await send_stream(live.client, {"message": FIRST_MESSAGE, "session_id": "trip"})
    await settled(live)

    assert "title" not in result.names
    assert result.names[-1] == "done"
    assert len(upstream.fake.title_requests) == 1  # asked once, never retried
    assert await summary_of(live.client, "trip") == (SEED_TITLE, "message")
    assert await found_by(live.client, "absolument") == ["trip"]


async def test_a_title_that_times_out_leaves_the_seed_title(
    settings: Settings, database: Database, upstream: RunningFake
) -> None:
    never = asyncio.Event()
    upstream.fake.title_default = Respond(chunks=["Too late"], before_first_chunk=never)
    try:
        async with openai_app(settings, upstream, title_timeout_seconds=SHORT_TIMEOUT) as live:
            result = await send_stream(
                live.client, {"message": FIRST_MESSAGE, "session_id": "trip"}
            )
            await settled(live)
            # The timed-out request was given up, not left open.
            await arrived(upstream.fake.title_abandoned)

            assert "title" not in result.names
            assert await summary_of(live.client, "trip") == (SEED_TITLE, "message")
    finally:
        never.set()


async def test_a_rename_while_the_title_is_written_wins(
    live: LiveServer, upstream: RunningFake, gates: Gates
) -> None:
    title_held = gates.new()
    upstream.fake.title_default = Respond(
        chunks=["Escapade parisienne"], before_first_chunk=title_held
    )
    result = await send_stream(live.client, {"message": FIRST_MESSAGE, "session_id": "trip"})
    assert result.names[-1] == "done"
    await arrived(upstream.fake.title_arrived)

    renamed = await live.client.patch(session_url("trip"), json={"title": "Mai à Paris"})
    assert renamed.status_code == 200, renamed.text
    title_held.set()
    await settled(live)

    assert await summary_of(live.client, "trip") == ("Mai à Paris", "user")
    assert await found_by(live.client, "escapade") == []
    assert await found_by(live.client, "mai") == ["trip"]


async def test_a_title_for_a_session_deleted_meanwhile_is_not_written_on_its_successor(
    live: LiveServer, upstream: RunningFake, gates: Gates
) -> None:
    """A session deleted while its title is written, then created again under the same id
    by another first message: the title of the first conversation is not the second's."""
    title_held = gates.new()
    upstream.fake.title_default = Respond(
        chunks=["Escapade parisienne"], before_first_chunk=title_held
    )
    await send(live.client, FIRST_MESSAGE, session_id="trip")
    await arrived(upstream.fake.title_arrived)
    deleted = await live.client.delete(session_url("trip"))
    assert deleted.status_code == 204, deleted.text
    upstream.fake.title_default = Respond(chunks=[])
    await send(live.client, "Quel temps fait-il à Lyon ?", session_id="trip")
    title_held.set()
    await settled(live)

    assert await summary_of(live.client, "trip") == (
        make_title("Quel temps fait-il à Lyon ?"),
        "message",
    )
    assert await found_by(live.client, "escapade") == []


async def test_stopping_the_reply_cancels_its_title(
    live: LiveServer, upstream: RunningFake, gates: Gates
) -> None:
    reply_paused, title_held = gates.new(), gates.new()
    upstream.fake.queue(
        Respond(chunks=["Le Louvre, ", "et Montmartre."], pause_after=1, resume=reply_paused)
    )
    upstream.fake.title_default = Respond(
        chunks=["Visiter Paris en mai"], before_first_chunk=title_held
    )

    async with live.client.stream(
        "POST", STREAM, json={"message": FIRST_MESSAGE, "session_id": "trip"}
    ) as response:
        events = sse_events(response)
        assert (await next_event(events)).event == "session"
        assert (await next_event(events)).event == "delta"
        await arrived(upstream.fake.title_arrived)

        stopped = await live.client.post(f"{session_url('trip')}/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json() == {"stopped": True}
        # The title request was given up by the time the stop answered.
        assert len(live.app.state.title_tasks) == 0
        await arrived(upstream.fake.title_abandoned)
        rest = [event async for event in remaining_events(events)]

    assert [e.event for e in rest] == ["done"]
    assert rest[0].data["status"] == "incomplete"
    title_held.set()
    await settled(live)
    assert await summary_of(live.client, "trip") == (SEED_TITLE, "message")


async def test_shutdown_cancels_the_titles_being_asked_for(
    settings: Settings, database: Database, upstream: RunningFake
) -> None:
    title_held = asyncio.Event()
    upstream.fake.title_default = Respond(
        chunks=["Visiter Paris en mai"], before_first_chunk=title_held
    )
    app = create_app(openai_settings(settings, upstream))
    try:
        async with serve(app) as live:
            await send(live.client, FIRST_MESSAGE, session_id="trip")
            await arrived(upstream.fake.title_arrived)
            assert len(app.state.title_tasks) == 1
        # The server is down: its title task was cancelled, and the request given up.
        assert len(app.state.title_tasks) == 0
        await arrived(upstream.fake.title_abandoned)
    finally:
        title_held.set()
    async with serve(create_app(settings)) as live:
        assert await summary_of(live.client, "trip") == (SEED_TITLE, "message")


def openai_settings(settings: Settings, upstream: RunningFake, **overrides: Any) -> Settings:
    return make_settings(
        settings.database_url,
        assistant_provider="openai",
        openai_base_url=upstream.api_url,
        openai_model="gpt-4",
        title_model=TITLE_MODEL,
        openai_api_key=None,
        openai_max_retries=0,
        **overrides,
    )


async def test_only_a_sessions_first_message_asks_for_a_title(
    live: LiveServer, upstream: RunningFake
) -> None:
    """Edits (of the first message too), later messages, regenerations and branch switches
    never ask for a title."""
    upstream.fake.title_default = Respond(chunks=["Visiter Paris en mai"])
    first = await send(live.client, FIRST_MESSAGE, session_id="trip")
    await settled(live)
    assert len(upstream.fake.title_requests) == 1

    edit = await live.client.post(
        STREAM,
        json={
            "message": "Je pars à Rome en mai",
            "session_id": "trip",
            "edit_of": first["user_message_id"],
        },
    )
    assert edit.status_code == 200, edit.text
    await send(live.client, "Et les musées ?", session_id="trip")
    detail = await get_session(live.client, "trip")
    regenerated = await live.client.post(
        f"{session_url('trip')}/messages/{detail['messages'][-1]['id']}/regenerate",
        params={"stream": "false"},
    )
    assert regenerated.status_code == 200, regenerated.text
    switched = await live.client.put(
        f"{session_url('trip')}/branch", json={"message_id": first["user_message_id"]}
    )
    assert switched.status_code == 200, switched.text
    await settled(live)

    assert len(upstream.fake.title_requests) == 1
    assert len(upstream.fake.requests) == 4  # the chat requests went on as before
    assert await summary_of(live.client, "trip") == ("Visiter Paris en mai", "model")


async def test_offline_assistants_keep_the_seed_title(client: httpx.AsyncClient) -> None:
    """The echo assistant (the tests' default), as the knowledge base: no model, no title."""
    result = await send_stream(client, {"message": FIRST_MESSAGE, "session_id": "trip"})

    assert "title" not in result.names
    assert result.names[-1] == "done"
    detail = await get_session(client, "trip")
    assert (detail["title"], detail["title_source"]) == (SEED_TITLE, "message")


# --- On demand ----------------------------------------------------------------------------


async def new_session(live: LiveServer, upstream: RunningFake) -> Json:
    """A session of one exchange, with the seed's title (the title model answered nothing)."""
    reply = await send(live.client, FIRST_MESSAGE, session_id="trip")
    await settled(live)
    upstream.fake.title_requests.clear()
    upstream.fake.title_arrived.clear()
    return reply


async def test_a_title_asked_for_is_written_from_the_first_exchange(
    live: LiveServer, upstream: RunningFake
) -> None:
    await new_session(live, upstream)
    upstream.fake.queue_titles(Respond(chunks=["“Paris au printemps”"]))

    response = await live.client.post(title_url("trip"))

    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["title"], summary["title_source"]) == ("Paris au printemps", "model")
    detail = await get_session(live.client, "trip")
    assert {key: detail[key] for key in summary} == summary
    [request] = upstream.fake.title_requests
    assert request["messages"][1]["content"] == (
        f"User: {FIRST_MESSAGE}\n\nAssistant: Hello from the fake."
    )
    assert await found_by(live.client, "printemps") == ["trip"]


async def test_a_title_asked_for_replaces_the_users(
    live: LiveServer, upstream: RunningFake
) -> None:
    await new_session(live, upstream)
    await live.client.patch(session_url("trip"), json={"title": "Mine"})
    upstream.fake.queue_titles(Respond(chunks=["Paris au printemps"]))

    response = await live.client.post(title_url("trip"))

    assert response.status_code == 200, response.text
    assert (response.json()["title"], response.json()["title_source"]) == (
        "Paris au printemps",
        "model",
    )


async def test_a_rename_while_a_title_asked_for_is_written_wins(
    live: LiveServer, upstream: RunningFake, gates: Gates
) -> None:
    await new_session(live, upstream)
    title_held = gates.new()
    upstream.fake.queue_titles(
        Respond(chunks=["Paris au printemps"], before_first_chunk=title_held)
    )

    asking = asyncio.create_task(live.client.post(title_url("trip")))
    await arrived(upstream.fake.title_arrived)
    renamed = await live.client.patch(session_url("trip"), json={"title": "Mai à Paris"})
    assert renamed.status_code == 200, renamed.text
    title_held.set()
    response = await asking

    assert response.status_code == 200, response.text
    assert (response.json()["title"], response.json()["title_source"]) == ("Mai à Paris", "user")
    assert await summary_of(live.client, "trip") == ("Mai à Paris", "user")


async def test_a_title_asked_for_sees_no_reply_when_the_first_one_failed(
    live: LiveServer, upstream: RunningFake
) -> None:
    """The first exchange is the first message and its own reply: when that reply failed,
    the model is not shown the reply to a later message as if it answered the first."""
    upstream.fake.queue(Fail(500), Fail(500))
    failed = await live.client.post(CHAT, json={"message": FIRST_MESSAGE, "session_id": "trip"})
    assert failed.status_code == 502, failed.text
    await send(live.client, "Et en juin ?", session_id="trip")
    await settled(live)
    upstream.fake.title_requests.clear()
    upstream.fake.queue_titles(Respond(chunks=["Paris au printemps"]))

    response = await live.client.post(title_url("trip"))

    assert response.status_code == 200, response.text
    [request] = upstream.fake.title_requests
    assert request["messages"][1]["content"] == f"User: {FIRST_MESSAGE}"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param(Fail(500), TitleUnavailable, id="http-500"),
        pytest.param(Respond(chunks=["```"]), TitleUnavailable, id="unusable"),
    ],
)
async def test_a_title_the_model_cannot_write_is_a_502(
    live: LiveServer, upstream: RunningFake, answer: Behaviour, error: type[TitleUnavailable]
) -> None:
    await new_session(live, upstream)
    upstream.fake.queue_titles(answer)

    response = await live.client.post(title_url("trip"))

    assert response.status_code == 502, response.text
    assert response.json() == {"detail": error.detail}
    assert await summary_of(live.client, "trip") == (SEED_TITLE, "message")


async def test_a_title_asked_for_that_times_out_is_a_504(
    settings: Settings, database: Database, upstream: RunningFake
) -> None:
    never = asyncio.Event()
    try:
        async with openai_app(settings, upstream, title_timeout_seconds=SHORT_TIMEOUT) as live:
            await send(live.client, FIRST_MESSAGE, session_id="trip")
            await settled(live)
            upstream.fake.queue_titles(Respond(chunks=["Too late"], before_first_chunk=never))

            response = await live.client.post(title_url("trip"))

            assert response.status_code == 504, response.text
            assert response.json() == {"detail": TitleTimedOut.detail}
            assert await summary_of(live.client, "trip") == (SEED_TITLE, "message")
    finally:
        never.set()


async def test_a_title_asked_for_a_session_nobody_has_is_a_404(
    live: LiveServer, upstream: RunningFake
) -> None:
    response = await live.client.post(title_url("nobody-has-it"))

    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Session not found"}
    assert upstream.fake.title_requests == []


async def test_a_title_asked_for_a_session_without_a_user_message_is_a_422(
    live: LiveServer, database: Database, upstream: RunningFake
) -> None:
    async with database.write() as conn:
        await session_queries.create_session_if_absent(
            conn, session_id="greeting", user_id=None, now=utc_now()
        )
    await message_service.save_message(
        database, session_id="greeting", role="assistant", content="Hello!", metadata={}
    )

    response = await live.client.post(title_url("greeting"))

    assert response.status_code == 422, response.text
    assert response.json() == {"detail": NothingToTitle.detail}
    assert upstream.fake.title_requests == []


async def test_a_title_asked_for_without_a_model_is_a_409(client: httpx.AsyncClient) -> None:
    await send(client, FIRST_MESSAGE, session_id="trip")

    response = await client.post(title_url("trip"))
    missing = await client.post(title_url("nobody-has-it"))

    assert response.status_code == 409, response.text
    assert response.json() == {"detail": TitlesNotWritten.detail}
    # Whose session it is (or whether it exists) is decided first.
    assert missing.status_code == 404, missing.text
    detail = await get_session(client, "trip")
    assert (detail["title"], detail["title_source"]) == (SEED_TITLE, "message")


async def test_titles_asked_for_count_against_the_rate_limit(
    settings: Settings, database: Database, upstream: RunningFake
) -> None:
    async with openai_app(
        settings, upstream, rate_limit_enabled=True, rate_limit_messages="2/minute"
    ) as live:
        await send(live.client, FIRST_MESSAGE, session_id="trip")
        upstream.fake.title_default = Respond(chunks=["Paris au printemps"])

        first = await live.client.post(title_url("trip"))
        refused = await live.client.post(title_url("trip"))
        await settled(live)

    assert first.status_code == 200, first.text
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
