"""POST /api/v1/chat/sessions/{id}/stop: stopping a streamed reply mid-way, over HTTP."""

import asyncio

import httpx

from app.kit.db.engine import Database
from tests.api.conftest import bearer
from tests.api.helpers import (
    ScriptedAssistant,
    assert_stream_succeeded,
    get_session,
    list_sessions,
    open_stream,
    reply_summary,
    send,
    send_stream,
    session_url,
    stored_messages,
    use_assistant,
)
from tests.conftest import LiveServer
from tests.tokens import hs256_token

STOPPED_SUMMARY = {
    "provider": "test",
    "model": "test-1",
    "status": "incomplete",
    "finish_reason": "stopped",
    "error": "stopped",
}


def stop_url(session_id: str) -> str:
    return f"{session_url(session_id)}/stop"


async def test_stop_mid_stream_saves_the_partial_reply_and_ends_the_stream(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["first ", "second ", "third"], gate=gate)

    with use_assistant(live_server, assistant):
        async with open_stream(live_server, {"message": "hello", "session_id": "s"}) as stream:
            await stream.read_until("delta")

            stopped = await client.post(stop_url("s"))

            assert stopped.status_code == 200, stopped.text
            assert stopped.json() == {"stopped": True}
            # Saved before the stop is answered: a message sent next comes after it.
            saved = await get_session(client, "s")
            rest = await stream.read_until()
        assert not gate.is_set()  # the rest of the reply was never asked for

    assert [e.event for e in stream.events] == ["session", "delta", "done"]
    assert stream.events[1].data == {"content": "first "}
    user, reply = saved["messages"]
    assert rest[-1].data == {"session_id": "s", "message_id": reply["id"], "status": "incomplete"}
    assert (user["role"], user["content"]) == ("user", "hello")
    assert (reply["role"], reply["content"]) == ("assistant", "first ")
    assert reply_summary(reply["metadata"]) == STOPPED_SUMMARY
    assert (saved["message_count"], saved["last_message"]) == (2, "first")
    assert await get_session(client, "s") == saved
    [listed] = (await list_sessions(client))["sessions"]
    assert (listed["message_count"], listed["last_message"]) == (2, "first")
    assert [m["seq"] for m in await stored_messages(database, "s")] == [1, 2]
    assert assistant.calls == 1


async def test_the_session_continues_after_a_stop(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    gate = asyncio.Event()
    with use_assistant(live_server, ScriptedAssistant(["cut ", "off"], gate=gate)):
        async with open_stream(live_server, {"message": "one", "session_id": "s"}) as stream:
            await stream.read_until("delta")
            assert (await client.post(stop_url("s"))).json() == {"stopped": True}
            await stream.read_until()

    result = await send_stream(client, {"message": "two", "session_id": "s"})

    assert_stream_succeeded(result)
    session = await get_session(client, "s")
    assert [(m["role"], m["content"]) for m in session["messages"][:3]] == [
        ("user", "one"),
        ("assistant", "cut "),
        ("user", "two"),
    ]
    assert session["message_count"] == 4


async def test_stop_with_no_reply_running_is_false_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await send(client, "plain", session_id="s")
    assert_stream_succeeded(await send_stream(client, {"message": "streamed", "session_id": "s"}))
    before = await get_session(client, "s")

    first = await client.post(stop_url("s"))
    again = await client.post(stop_url("s"))

    assert (first.status_code, first.json()) == (200, {"stopped": False})
    assert (again.status_code, again.json()) == (200, {"stopped": False})
    assert await get_session(client, "s") == before


async def test_stop_of_an_unknown_or_malformed_session(client: httpx.AsyncClient) -> None:
    missing = await client.post(stop_url("no-such-session"))
    malformed = await client.post(stop_url("not%20valid"))

    assert (missing.status_code, missing.json()) == (404, {"detail": "Session not found"})
    assert malformed.status_code == 422, malformed.text


async def test_another_users_stop_is_404_and_the_reply_runs_on(
    auth_client: httpx.AsyncClient, auth_live_server: LiveServer
) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(hs256_token("bob"))
    gate = asyncio.Event()
    body = {"message": "hello", "session_id": "alices"}

    with use_assistant(auth_live_server, ScriptedAssistant(["first ", "second"], gate=gate)):
        async with open_stream(auth_live_server, body, headers=alice) as stream:
            await stream.read_until("delta")

            by_bob = await auth_client.post(stop_url("alices"), headers=bob)
            gate.set()
            rest = await stream.read_until()

    assert (by_bob.status_code, by_bob.json()) == (404, {"detail": "Session not found"})
    assert [e.event for e in rest] == ["delta", "done"]
    assert rest[-1].data["status"] == "complete"
    session = (await auth_client.get(session_url("alices"), headers=alice)).json()
    assert session["messages"][-1]["content"] == "first second"
    assert session["messages"][-1]["metadata"]["status"] == "complete"


async def test_the_owner_and_a_service_caller_may_stop(
    auth_client: httpx.AsyncClient, auth_live_server: LiveServer
) -> None:
    alice = bearer(hs256_token("alice"))
    service = bearer(hs256_token("backend", role="service_role"))

    with use_assistant(auth_live_server, ScriptedAssistant(["a ", "b"], gate=asyncio.Event())):
        for session_id, stopper in (("by-owner", alice), ("by-service", service)):
            body = {"message": "hello", "session_id": session_id}
            async with open_stream(auth_live_server, body, headers=alice) as stream:
                await stream.read_until("delta")

                stopped = await auth_client.post(stop_url(session_id), headers=stopper)
                rest = await stream.read_until()

            assert stopped.json() == {"stopped": True}, session_id
            assert rest[-1].data["status"] == "incomplete", session_id
