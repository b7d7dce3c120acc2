"""POST /api/v1/chat: sessions are created and continued, the reply sees the history."""

import asyncio
import uuid

import httpx
from sqlalchemy import select

from app.kit.db.engine import Database
from app.kit.db.tables import chat_sessions
from app.kit.errors import AssistantUnavailable
from app.kit.text import make_preview, make_title
from tests.api.helpers import (
    CHAT,
    ECHO_METADATA,
    ScriptedAssistant,
    echo_reply,
    get_session,
    list_sessions,
    reply_summary,
    send,
    stored_messages,
    use_assistant,
)
from tests.conftest import LiveServer


async def test_new_session_gets_a_server_made_uuid(client: httpx.AsyncClient) -> None:
    data = await send(client, "Hello there")

    session_id = data["session_id"]
    assert str(uuid.UUID(session_id)) == session_id
    assert data["response"] == echo_reply("Hello there", 1)
    session = await get_session(client, session_id)
    assert session["message_count"] == 2
    assert [m["role"] for m in session["messages"]] == ["user", "assistant"]
    assert session["messages"][0]["content"] == "Hello there"
    assert session["messages"][1]["content"] == data["response"]
    assert session["messages"][1]["id"] == data["message_id"]


async def test_each_new_session_gets_its_own_id(client: httpx.AsyncClient) -> None:
    first = await send(client, "one")
    second = await send(client, "two")

    assert first["session_id"] != second["session_id"]
    assert first["message_id"] != second["message_id"]
    assert (await list_sessions(client))["total"] == 2


async def test_continuing_a_session_grows_it_by_two_and_the_reply_sees_the_history(
    client: httpx.AsyncClient,
) -> None:
    session_id = (await send(client, "first question"))["session_id"]

    for exchange in (2, 3, 4):
        data = await send(client, f"question {exchange}", session_id=session_id)
        assert data["response"] == echo_reply(f"question {exchange}", exchange)
        session = await get_session(client, session_id)
        assert session["message_count"] == 2 * exchange
        assert len(session["messages"]) == 2 * exchange

    assert session["title"] == "first question"
    assert session["last_message"] == make_preview(echo_reply("question 4", 4))
    assert (await list_sessions(client))["total"] == 1


async def test_client_given_new_session_id_is_created(client: httpx.AsyncClient) -> None:
    data = await send(client, "hi", session_id="my-session_01")

    assert data["session_id"] == "my-session_01"
    session = await get_session(client, "my-session_01")
    assert session["session_id"] == "my-session_01"
    assert session["message_count"] == 2
    listed = await list_sessions(client)
    assert [s["session_id"] for s in listed["sessions"]] == ["my-session_01"]


async def test_128_char_session_id_is_accepted(client: httpx.AsyncClient) -> None:
    session_id = "a" * 127 + "Z"

    data = await send(client, "hi", session_id=session_id)

    assert data["session_id"] == session_id
    assert (await get_session(client, session_id))["message_count"] == 2


async def test_user_id_is_stored_and_filters_the_list(
    client: httpx.AsyncClient, database: Database
) -> None:
    data = await send(client, "mine", user_id="alice")
    await send(client, "not mine", user_id="bob")

    listed = await list_sessions(client, user_id="alice")
    assert [s["session_id"] for s in listed["sessions"]] == [data["session_id"]]
    assert listed["total"] == 1
    async with database.read() as conn:
        stored = (
            await conn.execute(
                select(chat_sessions.c.user_id).where(
                    chat_sessions.c.session_id == data["session_id"]
                )
            )
        ).scalar_one()
    assert stored == "alice"


async def test_255_char_user_id_is_accepted(client: httpx.AsyncClient) -> None:
    user_id = "u" * 255

    data = await send(client, "hi", user_id=user_id)

    listed = await list_sessions(client, user_id=user_id)
    assert [s["session_id"] for s in listed["sessions"]] == [data["session_id"]]


async def test_assistant_message_metadata_names_the_provider(
    client: httpx.AsyncClient, database: Database
) -> None:
    data = await send(client, "who answers?")

    session = await get_session(client, data["session_id"])
    assert [reply_summary(m["metadata"]) for m in session["messages"]] == [{}, ECHO_METADATA]
    rows = await stored_messages(database, data["session_id"])
    assert [(r["seq"], r["role"], reply_summary(r["metadata"])) for r in rows] == [
        (1, "user", {}),
        (2, "assistant", ECHO_METADATA),
    ]
    assert rows[1]["metadata"]["usage"] is None
    assert rows[1]["metadata"]["sources"] == []
    assert str(rows[1]["id"]) == data["message_id"]


async def test_failing_assistant_gives_502_and_records_the_failed_reply(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    assistant = ScriptedAssistant(["never"], fail_with=RuntimeError("provider down"))

    with use_assistant(live_server, assistant):
        response = await client.post(CHAT, json={"message": "are you there?", "session_id": "s1"})

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": AssistantUnavailable.detail}
    assert assistant.calls == 1
    session = await get_session(client, "s1")
    # The user's message is kept, and the reply is in the history as failed, not missing.
    assert session["message_count"] == 2
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "are you there?"),
        ("assistant", ""),
    ]
    assert reply_summary(session["messages"][1]["metadata"]) == {
        "provider": "test",
        "model": "test-1",
        "status": "failed",
        "finish_reason": "error",
        "error": "unavailable",
    }
    assert session["title"] == make_title("are you there?")
    assert session["last_message"] == "are you there?"  # a failed reply has no preview
    assert len(await stored_messages(database, "s1")) == 2


async def test_after_a_failed_reply_the_session_continues(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    with use_assistant(live_server, ScriptedAssistant([], fail_with=RuntimeError("down"))):
        assert (
            await client.post(CHAT, json={"message": "one", "session_id": "s"})
        ).status_code == 502

    data = await send(client, "two", session_id="s")

    # Both user messages are in the history the assistant saw; the failed reply is not.
    assert data["response"] == echo_reply("two", 2)
    session = await get_session(client, "s")
    assert [m["role"] for m in session["messages"]] == ["user", "assistant", "user", "assistant"]
    assert session["messages"][1]["metadata"]["status"] == "failed"
    assert session["message_count"] == 4


async def test_concurrent_messages_to_one_new_session_all_get_stored_in_order(
    client: httpx.AsyncClient, database: Database
) -> None:
    session_id = "concurrent-session"
    messages = [f"message number {i:02d} " + "x" * 60 for i in range(20)]

    responses = await asyncio.gather(
        *(client.post(CHAT, json={"message": m, "session_id": session_id}) for m in messages)
    )

    assert [r.status_code for r in responses] == [200] * 20
    assert {r.json()["session_id"] for r in responses} == {session_id}
    rows = await stored_messages(database, session_id)
    assert [r["seq"] for r in rows] == list(range(1, 41))
    assert sorted(r["content"] for r in rows if r["role"] == "user") == sorted(messages)
    assert {str(r["id"]) for r in rows if r["role"] == "assistant"} == {
        r.json()["message_id"] for r in responses
    }
    session = await get_session(client, session_id)
    assert session["message_count"] == 40 == len(rows)
    assert [m["id"] for m in session["messages"]] == [str(r["id"]) for r in rows]
    assert session["title"] == make_title(rows[0]["content"])
    assert session["last_message"] == make_preview(rows[-1]["content"])
    listed = await list_sessions(client)
    assert listed["total"] == 1
    assert listed["sessions"][0]["message_count"] == 40
