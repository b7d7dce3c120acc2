"""GET /api/v1/chat/sessions/{id}/stream: event ids, and resuming a reply's stream."""

import asyncio
import uuid

import httpx

from app.kit.db.engine import Database
from tests.api.conftest import bearer
from tests.api.helpers import (
    ScriptedAssistant,
    SseEvent,
    assert_stream_succeeded,
    get_session,
    open_stream,
    resume_url,
    resumed,
    send,
    send_stream,
    session_url,
    stored_messages,
    use_assistant,
)
from tests.conftest import LiveServer
from tests.tokens import hs256_token

CHUNKS = ["first ", "second ", "third"]


def stop_url(session_id: str) -> str:
    return f"{session_url(session_id)}/stop"


def offset_of(event: SseEvent) -> int:
    assert event.id is not None
    message_id, _, offset = event.id.partition(":")
    uuid.UUID(message_id)
    return int(offset)


async def stored_reply(database: Database, session_id: str) -> dict[str, object]:
    rows = await stored_messages(database, session_id)
    [reply] = [row for row in rows if row["role"] == "assistant"]
    return reply


async def test_every_event_has_an_id_with_the_characters_sent_so_far(
    client: httpx.AsyncClient,
) -> None:
    result = await send_stream(client, {"message": "Count my characters", "session_id": "s"})

    started, done = assert_stream_succeeded(result)
    reply_id = started.data["message_id"]
    assert done.data["message_id"] == reply_id
    assert started.id == f"{reply_id}:0"
    sent = 0
    for event in result.events[1:]:
        if event.event == "delta":
            sent += len(event.data["content"])
        assert event.id == f"{reply_id}:{sent}"
    assert sent == len(result.text)
    session = await get_session(client, "s")
    assert session["messages"][-1]["id"] == reply_id


async def test_a_client_cut_mid_reply_resumes_with_its_last_event_id(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    gate = asyncio.Event()
    body = {"message": "hello", "session_id": "s"}
    with use_assistant(live_server, ScriptedAssistant(CHUNKS, gate=gate)):
        async with open_stream(live_server, body) as first:
            await first.read_until("delta")
        # The connection is gone; the reply goes on, and the client comes back.
        last = first.events[-1]
        async with resumed(live_server, "s", last.id) as second:
            gate.set()
            rest = await second.read_until()

    assert [e.event for e in rest] == ["delta", "delta", "done"]
    assert rest[-1].data["status"] == "complete"
    reply = await stored_reply(database, "s")
    assert first.text + second.text == reply["content"] == "".join(CHUNKS)
    assert rest[-1].id == f"{reply['id']}:{len(reply['content'])}"


async def test_resuming_from_any_offset_sends_exactly_the_text_after_it(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    """Offsets count characters, not events: a client may hold less than an event's worth."""
    gate = asyncio.Event()
    with use_assistant(live_server, ScriptedAssistant(["héllo wörld ", "🙂 end"], gate=gate)):
        async with open_stream(live_server, {"message": "hi", "session_id": "s"}) as first:
            await first.read_until("delta")
        reply_id = first.events[0].data["message_id"]
        async with (
            resumed(live_server, "s", f"{reply_id}:0") as from_start,
            resumed(live_server, "s", f"{reply_id}:7") as from_middle,
        ):
            caught_up = await from_middle.read_until("delta")
            await from_start.read_until("delta")
            gate.set()
            await from_start.read_until()
            await from_middle.read_until()

    reply = await stored_reply(database, "s")
    assert reply["content"] == "héllo wörld 🙂 end"
    assert from_start.text == reply["content"]
    assert from_middle.text == "örld 🙂 end"
    assert caught_up[0].data == {"content": "örld "}
    assert offset_of(caught_up[0]) == len("héllo wörld ")


async def test_resuming_without_last_event_id_starts_with_the_session_event(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    gate = asyncio.Event()
    with use_assistant(live_server, ScriptedAssistant(CHUNKS, gate=gate)):
        async with open_stream(live_server, {"message": "hello", "session_id": "s"}) as first:
            original = (await first.read_until("delta"))[0]
            async with resumed(live_server, "s") as second:
                so_far = await second.read_until("delta")
                gate.set()
                await second.read_until()
                await first.read_until()

    session, delta = so_far
    assert session.event == "session"
    assert session.data == original.data
    assert session.id == original.id
    assert delta.data == {"content": "first "}
    assert [e.event for e in second.events] == ["session", "delta", "delta", "delta", "done"]
    assert second.events[-1] == first.events[-1]
    reply = await stored_reply(database, "s")
    assert second.text == first.text == reply["content"]


async def test_a_reply_that_ended_meanwhile_is_resumed_from_what_is_stored(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    result = await send_stream(client, {"message": "Finish before I come back", "session_id": "s"})
    started, done = assert_stream_succeeded(result)
    middle = [e for e in result.events if e.event == "delta"][1]

    async with resumed(live_server, "s", middle.id) as stream:
        rest = await stream.read_until()
    async with resumed(live_server, "s", done.id) as at_end:
        nothing_left = await at_end.read_until()

    received = result.text[: offset_of(middle)] + stream.text
    assert received == (await stored_reply(database, "s"))["content"]
    assert [e.event for e in rest] == ["delta", "done"]
    assert rest[-1].data == done.data
    assert rest[-1].id == done.id
    assert nothing_left == [rest[-1]]
    # Nothing is being generated any more: without an id, nothing to resume.
    assert (await client.get(resume_url("s"))).status_code == 204
    assert started.data["session_id"] == "s"


async def test_a_stopped_reply_ends_for_every_follower(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    gate = asyncio.Event()
    with use_assistant(live_server, ScriptedAssistant(CHUNKS, gate=gate)):
        async with open_stream(live_server, {"message": "hello", "session_id": "s"}) as first:
            await first.read_until("delta")
            async with (
                resumed(live_server, "s") as second,
                resumed(live_server, "s", first.events[-1].id) as third,
            ):
                await second.read_until("delta")

                stopped = await client.post(stop_url("s"))

                await first.read_until()
                await second.read_until()
                await third.read_until()
        assert not gate.is_set()

    assert stopped.json() == {"stopped": True}
    reply = await stored_reply(database, "s")
    assert reply["content"] == "first "
    for stream in (first, second, third):
        assert stream.events[-1].event == "done"
        assert stream.events[-1].data["status"] == "incomplete"
        assert stream.events[-1].id == f"{reply['id']}:6"
    assert first.text == second.text == "first "
    assert third.text == ""


async def test_two_resumers_at_once_get_the_same_reply(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    gate = asyncio.Event()
    with use_assistant(live_server, ScriptedAssistant(CHUNKS, gate=gate)):
        async with open_stream(live_server, {"message": "hello", "session_id": "s"}) as first:
            await first.read_until("delta")
        async with resumed(live_server, "s") as second, resumed(live_server, "s") as third:
            await second.read_until("delta")
            await third.read_until("delta")
            gate.set()
            await second.read_until()
            await third.read_until()

    reply = await stored_reply(database, "s")
    assert second.text == third.text == reply["content"] == "".join(CHUNKS)
    assert second.events[-1] == third.events[-1]
    assert second.events[-1].data["status"] == "complete"


async def test_a_plain_reply_being_generated_can_be_followed(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    gate = asyncio.Event()
    assistant = ScriptedAssistant(CHUNKS, gate=gate, hold_reply=True)
    with use_assistant(live_server, assistant):
        plain = asyncio.create_task(send(client, "hello", session_id="s"))
        await assistant.asked.wait()
        async with resumed(live_server, "s") as stream:
            await stream.read_until("session")
            gate.set()
            await stream.read_until()
        answered = await plain

    assert [e.event for e in stream.events] == ["session", "delta", "done"]
    assert stream.text == answered["response"] == (await stored_reply(database, "s"))["content"]


async def test_nothing_to_resume_is_204(client: httpx.AsyncClient) -> None:
    await send(client, "done already", session_id="s")

    response = await client.get(resume_url("s"))

    assert response.status_code == 204
    assert response.content == b""


async def test_an_id_of_no_reply_of_the_session_counts_as_absent(
    client: httpx.AsyncClient,
) -> None:
    answered = await send(client, "a reply elsewhere", session_id="other")
    await send(client, "done already", session_id="s")

    for last in (
        f"{answered['message_id']}:3",
        f"{uuid.uuid4()}:0",
        f"{answered['user_message_id']}:0",
    ):
        response = await client.get(resume_url("s"), headers={"Last-Event-ID": last})
        assert response.status_code == 204, last
    empty = await client.get(resume_url("s"), headers={"Last-Event-ID": ""})
    assert empty.status_code == 204


async def test_a_malformed_last_event_id_is_422(client: httpx.AsyncClient) -> None:
    await send(client, "hello", session_id="s")

    for last in ("nonsense", f"{uuid.uuid4()}", f"{uuid.uuid4()}:-1", f"{uuid.uuid4()}:x"):
        response = await client.get(resume_url("s"), headers={"Last-Event-ID": last})
        assert response.status_code == 422, last
        [error] = response.json()["detail"]
        assert error["loc"] == ["header", "last-event-id"]


async def test_unknown_session_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(resume_url("no-such-session"))

    assert (response.status_code, response.json()) == (404, {"detail": "Session not found"})


async def test_another_users_session_is_404_while_its_reply_streams(
    auth_client: httpx.AsyncClient, auth_live_server: LiveServer
) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(hs256_token("bob"))
    gate = asyncio.Event()
    body = {"message": "hello", "session_id": "alices"}
    with use_assistant(auth_live_server, ScriptedAssistant(CHUNKS, gate=gate)):
        async with open_stream(auth_live_server, body, headers=alice) as stream:
            await stream.read_until("delta")
            last = {"Last-Event-ID": str(stream.events[-1].id)}

            by_bob = await auth_client.get(resume_url("alices"), headers=bob)
            by_bob_with_id = await auth_client.get(resume_url("alices"), headers={**bob, **last})
            async with resumed(auth_live_server, "alices", headers=alice) as by_alice:
                await by_alice.read_until("delta")
                gate.set()
                await by_alice.read_until()
            await stream.read_until()

    assert (by_bob.status_code, by_bob.json()) == (404, {"detail": "Session not found"})
    assert by_bob_with_id.status_code == 404
    assert by_alice.text == stream.text == "".join(CHUNKS)
