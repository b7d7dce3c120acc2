"""Editing a message over HTTP (issue 13): `edit_of` on POST /chat and /chat/stream."""

import uuid

import httpx

from app.kit.db.engine import Database
from tests.api.helpers import (
    CHAT,
    STREAM,
    assert_stream_succeeded,
    get_session,
    send,
    send_stream,
    stored_messages,
)


async def test_an_edit_over_chat_and_stream_makes_a_sibling_branch_current(
    client: httpx.AsyncClient,
) -> None:
    first = await send(client, "one", session_id="s")
    second = await send(client, "two", session_id="s")
    original = await get_session(client, "s")
    two = original["messages"][2]
    assert two["id"] == second["user_message_id"]
    assert original["messages"][1]["id"] == first["message_id"]

    response = await client.post(
        CHAT, json={"message": "two, edited", "session_id": "s", "edit_of": two["id"]}
    )
    assert response.status_code == 200, response.text
    edited = response.json()
    session = await get_session(client, "s")
    assert [m["id"] for m in session["messages"]] == [
        *(m["id"] for m in original["messages"][:2]),
        edited["user_message_id"],
        edited["message_id"],
    ]
    assert session["messages"][2]["sibling_ids"] == [two["id"], edited["user_message_id"]]
    assert session["messages"][2]["parent_id"] == first["message_id"]
    assert session["message_count"] == 4
    assert session["current_message_id"] == edited["message_id"]

    streamed = await send_stream(
        client, {"message": "two, again", "session_id": "s", "edit_of": two["id"]}
    )
    started, done = assert_stream_succeeded(streamed)
    session = await get_session(client, "s")
    assert session["messages"][2]["id"] == started.data["user_message_id"]
    assert session["messages"][3]["id"] == done.data["message_id"]
    assert session["messages"][2]["sibling_ids"] == [
        two["id"],
        edited["user_message_id"],
        started.data["user_message_id"],
    ]
    assert session["messages"][3]["content"] == streamed.text


async def test_bad_edits_get_4xx_and_change_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    sent = await send(client, "one", session_id="s")
    await send(client, "elsewhere", session_id="other")
    elsewhere = (await get_session(client, "other"))["messages"][0]["id"]
    before = await stored_messages(database, "s")

    cases = [
        ({"edit_of": sent["message_id"], "session_id": "s"}, 422, "Only a user message"),
        ({"edit_of": str(uuid.uuid4()), "session_id": "s"}, 404, "Message not found"),
        ({"edit_of": elsewhere, "session_id": "s"}, 404, "Message not found"),
        ({"edit_of": sent["user_message_id"], "session_id": "nobody"}, 404, "Session not found"),
        ({"edit_of": sent["user_message_id"]}, 404, "Session not found"),
        ({"edit_of": "not-a-uuid", "session_id": "s"}, 422, "UUID"),
    ]
    for path in (CHAT, STREAM):
        for fields, status, detail in cases:
            response = await client.post(path, json={"message": "edited", **fields})
            assert response.status_code == status, (path, fields, response.text)
            assert detail in response.text, response.text

    assert await stored_messages(database, "s") == before
    listing = await client.get("/api/v1/chat/sessions")
    assert listing.json()["total"] == 2
