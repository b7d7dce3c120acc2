"""Regenerating a reply, switching branch and reading the whole tree over HTTP (issue 13), on
both databases."""

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from app.kit.db.engine import Database
from app.kit.text import make_preview
from app.messages import queries as message_queries
from tests.api.helpers import (
    CHAT,
    CHAT_RESPONSE_KEYS,
    DETAIL_KEYS,
    Json,
    ScriptedAssistant,
    assert_stream_succeeded,
    get_session,
    list_sessions,
    parse_sse,
    send,
    session_url,
    stored_messages,
    use_assistant,
)
from tests.api.helpers import StreamResult as Streamed
from tests.conftest import LiveServer
from tests.services.helpers import (
    assert_tree_matches_session,
    branch_by_choices,
    make_current,
    message_rows,
)
from tests.services.helpers import session_row as stored_session


def regenerate_url(session_id: str, message_id: str) -> str:
    return f"{session_url(session_id)}/messages/{message_id}/regenerate"


def branch_url(session_id: str) -> str:
    return f"{session_url(session_id)}/branch"


def tree_url(session_id: str) -> str:
    return f"{session_url(session_id)}/tree"


async def regenerate(client: httpx.AsyncClient, session_id: str, message_id: str) -> Streamed:
    response = await client.post(regenerate_url(session_id, message_id))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return Streamed(response=response, events=parse_sse(response.text))


async def switch(client: httpx.AsyncClient, session_id: str, message_id: str) -> Json:
    response = await client.put(branch_url(session_id), json={"message_id": message_id})
    assert response.status_code == 200, response.text
    detail: Json = response.json()
    assert set(detail) == DETAIL_KEYS
    return detail


async def edit(client: httpx.AsyncClient, edit_of: str, text: str) -> Json:
    """An edit of the message `edit_of` of session "s"; the response body."""
    body = {"message": text, "session_id": "s", "edit_of": edit_of}
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    edited: Json = response.json()
    return edited


def ids(detail: Json) -> list[str]:
    return [m["id"] for m in detail["messages"]]


async def test_a_regenerated_reply_is_a_sibling_that_becomes_current(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "one", session_id="s")
    second = await send(client, "two", session_id="s")
    before = await get_session(client, "s")

    streamed = await regenerate(client, "s", second["message_id"])

    started, done = assert_stream_succeeded(streamed)
    assert started.data == {
        "session_id": "s",
        "user_message_id": second["user_message_id"],
        "message_id": done.data["message_id"],
    }
    detail = await get_session(client, "s")
    assert ids(detail) == [*ids(before)[:3], done.data["message_id"]]
    new_reply = detail["messages"][3]
    assert new_reply["content"] == streamed.text
    assert new_reply["parent_id"] == second["user_message_id"]
    assert new_reply["sibling_ids"] == [second["message_id"], done.data["message_id"]]
    assert new_reply["seq"] == 4
    # The assistant saw the conversation up to the question, not the old reply.
    assert "I can see 2 of your messages" in streamed.text
    assert detail["message_count"] == 4
    assert detail["last_message"] == make_preview(streamed.text)
    assert detail["current_message_id"] == done.data["message_id"]
    assert detail["title"] == before["title"]
    # The old reply stays stored; the tree is whole.
    assert second["message_id"] in {str(m["id"]) for m in await stored_messages(database, "s")}
    await assert_tree_matches_session(database, "s")


async def test_a_plain_regeneration_answers_as_post_chat(client: httpx.AsyncClient) -> None:
    sent = await send(client, "one", session_id="s")

    url = regenerate_url("s", sent["message_id"])
    response = await client.post(url, params={"stream": "false"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == CHAT_RESPONSE_KEYS
    assert body["user_message_id"] == sent["user_message_id"]
    assert body["session_id"] == "s"
    assert body["message_id"] != sent["message_id"]
    detail = await get_session(client, "s")
    assert ids(detail) == [sent["user_message_id"], body["message_id"]]
    assert detail["messages"][1]["content"] == body["response"]
    assert detail["messages"][1]["sibling_ids"] == [sent["message_id"], body["message_id"]]


async def test_bad_regenerations_get_4xx_and_change_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    sent = await send(client, "one", session_id="s")
    elsewhere = await send(client, "elsewhere", session_id="other")
    before = (await message_rows(database, "s"), await stored_session(database, "s"))

    cases = [
        ("s", sent["user_message_id"], 422, "Only an assistant reply can be regenerated"),
        ("s", str(uuid.uuid4()), 404, "Message not found in this session"),
        ("s", elsewhere["message_id"], 404, "Message not found in this session"),
        ("nobody", sent["message_id"], 404, "Session not found"),
        ("s", "not-a-uuid", 422, "UUID"),
    ]
    for stream in ("true", "false"):
        for session_id, message_id, status, detail in cases:
            response = await client.post(
                regenerate_url(session_id, message_id), params={"stream": stream}
            )
            assert response.status_code == status, (session_id, message_id, response.text)
            assert response.headers["content-type"] == "application/json"
            assert detail in response.text, response.text
    response = await client.post(regenerate_url("s", sent["message_id"]), params={"stream": "no?"})
    assert response.status_code == 422, response.text

    assert (await message_rows(database, "s"), await stored_session(database, "s")) == before


async def test_switching_back_and_forth_remembers_the_choice_at_every_fork(
    client: httpx.AsyncClient, database: Database
) -> None:
    """The peers' gap (LibreChat forgets on reload, Open WebUI below a fork): a choice made at
    a lower fork survives switching away at a fork above it and back."""
    first = await send(client, "one", session_id="s")
    second = await send(client, "two", session_id="s")
    edited = await edit(client, second["user_message_id"], "two, edited")
    regenerated = (await regenerate(client, "s", edited["message_id"])).events[-1].data
    # At the edited question: two replies; choose the older one.
    on_older = await switch(client, "s", edited["message_id"])
    assert ids(on_older)[2:] == [edited["user_message_id"], edited["message_id"]]
    assert on_older["messages"][3]["sibling_ids"] == [
        edited["message_id"],
        regenerated["message_id"],
    ]

    # Away to the original question (a fork above), then back by the edited question only.
    original = await switch(client, "s", second["user_message_id"])
    assert ids(original) == [
        first["user_message_id"],
        first["message_id"],
        second["user_message_id"],
        second["message_id"],
    ]
    assert original["last_message"] == make_preview(second["response"])
    back = await switch(client, "s", edited["user_message_id"])

    assert ids(back)[2:] == [edited["user_message_id"], edited["message_id"]]
    assert back["last_message"] == make_preview(edited["response"])
    assert back["message_count"] == 4
    # A reload, or another device, opens the same branch.
    assert await get_session(client, "s") == back
    session = await stored_session(database, "s")
    assert branch_by_choices(session, await message_rows(database, "s")) == [
        uuid.UUID(i) for i in ids(back)
    ]
    await assert_tree_matches_session(database, "s")


async def test_a_switch_changes_count_and_preview_but_not_the_activity_time(
    client: httpx.AsyncClient,
) -> None:
    await send(client, "one", session_id="s")
    second = await send(client, "two", session_id="s")
    third = await send(client, "three", session_id="s")
    edited = await edit(client, second["user_message_id"], "two, edited")
    await send(client, "a newer session", session_id="newer")
    short_branch = await get_session(client, "s")
    assert short_branch["current_message_id"] == edited["message_id"]

    long = await switch(client, "s", second["user_message_id"])

    assert long["message_count"] == 6
    assert long["current_message_id"] == third["message_id"]
    assert long["last_message"] == make_preview(third["response"])
    assert long["updated_at"] == short_branch["updated_at"]
    listed = (await list_sessions(client))["sessions"]
    assert [s["session_id"] for s in listed] == ["newer", "s"]
    assert (listed[1]["message_count"], listed[1]["last_message"]) == (6, long["last_message"])
    # A message sent now continues the branch switched to.
    sent = await send(client, "continuing", session_id="s")
    detail = await get_session(client, "s")
    assert ids(detail) == [*ids(long), sent["user_message_id"], sent["message_id"]]


async def test_a_switch_answers_a_page_of_the_branch_with_limit(
    client: httpx.AsyncClient,
) -> None:
    for text in ("one", "two", "three"):
        last = await send(client, text, session_id="s")

    response = await client.put(
        branch_url("s"), json={"message_id": last["message_id"]}, params={"limit": 2}
    )

    assert response.status_code == 200, response.text
    page = response.json()
    assert [m["content"] for m in page["messages"]] == ["three", last["response"]]
    assert page["has_more_messages"] is True
    assert page["messages_before"] == 5


async def test_bad_switches_get_4xx_and_change_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    sent = await send(client, "one", session_id="s")
    elsewhere = await send(client, "elsewhere", session_id="other")
    before = (await message_rows(database, "s"), await stored_session(database, "s"))

    cases: list[tuple[str, object, int, str]] = [
        ("s", {"message_id": str(uuid.uuid4())}, 404, "Message not found in this session"),
        ("s", {"message_id": elsewhere["message_id"]}, 404, "Message not found in this session"),
        ("nobody", {"message_id": sent["message_id"]}, 404, "Session not found"),
        ("s", {"message_id": "nope"}, 422, "UUID"),
        ("s", {}, 422, "message_id"),
        ("s", {"message_id": sent["message_id"], "extra": 1}, 422, "extra"),
        ("s", [sent["message_id"]], 422, "dict"),
    ]
    for session_id, body, status, detail in cases:
        response = await client.put(branch_url(session_id), json=body)
        assert response.status_code == status, (body, response.text)
        assert detail in response.text, response.text

    assert (await message_rows(database, "s"), await stored_session(database, "s")) == before


async def test_the_tree_pages_through_every_branch_in_the_order_written(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "one", session_id="s")
    second = await send(client, "two", session_id="s")
    await edit(client, second["user_message_id"], "two, edited")
    await regenerate(client, "s", second["message_id"])
    stored = await message_rows(database, "s")

    pages: list[Json] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(tree_url("s"), params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        assert pages[-1]["has_more"] is (cursor is not None)
        if cursor is None:
            break

    messages = [m for page in pages for m in page["messages"]]
    assert [len(page["messages"]) for page in pages] == [3, 3, 1]
    assert [m["id"] for m in messages] == [str(m["id"]) for m in stored]
    assert [m["ordinal"] for m in messages] == list(range(1, 8))
    assert [m["parent_id"] for m in messages] == [
        None if m["parent_id"] is None else str(m["parent_id"]) for m in stored
    ]
    children: dict[str | None, list[str]] = {}
    for message in messages:
        children.setdefault(message["parent_id"], []).append(message["id"])
    for message in messages:
        assert message["sibling_ids"] == children[message["parent_id"]]
    session = await stored_session(database, "s")
    assert {page["current_message_id"] for page in pages} == {str(session["current_leaf_id"])}
    assert pages[0]["session_id"] == "s"


async def test_bad_tree_requests_get_4xx(client: httpx.AsyncClient) -> None:
    await send(client, "one", session_id="s")
    bad: list[dict[str, str | int]] = [
        {"cursor": "abc"},
        {"cursor": "99999999999"},
        {"cursor": "-1"},
        {"limit": 0},
        {"limit": 1001},
    ]
    for params in bad:
        response = await client.get(tree_url("s"), params=params)
        assert response.status_code == 422, (params, response.text)
    assert (await client.get(tree_url("nobody"))).status_code == 404
    for past_the_end in ("2", "2147483647", "9999999999"):
        empty_end = await client.get(tree_url("s"), params={"cursor": past_the_end})
        assert empty_end.status_code == 200, empty_end.text
        assert empty_end.json()["messages"] == []
        assert empty_end.json()["next_cursor"] is None


async def test_a_stopped_regeneration_is_kept_as_an_incomplete_sibling(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    sent = await send(client, "one", session_id="s")
    gate = asyncio.Event()
    with use_assistant(live_server, ScriptedAssistant(["cut ", "short"], gate=gate)):
        async with client.stream("POST", regenerate_url("s", sent["message_id"])) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("event: delta"):
                    break
            stop = await client.post(f"{session_url('s')}/stop")
            assert stop.json() == {"stopped": True}
            rest = [line async for line in lines]
    assert any('"status":"incomplete"' in line for line in rest), rest

    detail = await get_session(client, "s")
    reply = detail["messages"][1]
    assert reply["content"] == "cut "
    assert reply["metadata"]["status"] == "incomplete"
    assert reply["sibling_ids"] == [sent["message_id"], reply["id"]]
    assert detail["last_message"] == "cut"
    await assert_tree_matches_session(database, "s")


async def test_a_regeneration_the_client_left_is_finished_and_saved(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    sent = await send(client, "one", session_id="s")
    gate = asyncio.Event()
    with use_assistant(live_server, ScriptedAssistant(["kept ", "whole"], gate=gate)):
        async with client.stream("POST", regenerate_url("s", sent["message_id"])) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: delta"):
                    break
        # The client is gone; the reply is still being generated, then finished.
        gate.set()
        await live_server.app.state.reply_tasks.wait_idle()

    detail = await get_session(client, "s")
    reply = detail["messages"][1]
    assert (reply["content"], reply["metadata"]["status"]) == ("kept whole", "complete")
    assert reply["sibling_ids"] == [sent["message_id"], reply["id"]]
    assert detail["last_message"] == "kept whole"
    await assert_tree_matches_session(database, "s")


async def test_a_failed_regeneration_is_a_failed_sibling_that_keeps_the_preview(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    sent = await send(client, "one", session_id="s")
    before = await get_session(client, "s")
    with use_assistant(live_server, ScriptedAssistant([], fail_with=RuntimeError("boom"))):
        streamed = await regenerate(client, "s", sent["message_id"])
        plain = await client.post(
            regenerate_url("s", sent["message_id"]), params={"stream": "false"}
        )

    assert streamed.names == ["session", "error"]
    assert plain.status_code == 502, plain.text
    detail = await get_session(client, "s")
    failed = detail["messages"][1]
    assert failed["metadata"]["status"] == "failed"
    assert len(failed["sibling_ids"]) == 3
    # As for any failed reply: it counts, but the preview is the branch's last text, the
    # question's (the old reply is on another branch now).
    assert detail["message_count"] == 2
    assert detail["last_message"] == "one" != before["last_message"]
    await assert_tree_matches_session(database, "s")


async def test_a_session_read_while_its_branch_is_switched_shows_one_branch(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary (count, current message) and the branch's messages are read in one
    snapshot: a switch committed between the two reads is seen by both or by neither. At
    READ COMMITTED (PostgreSQL) the messages were walked from the new branch's end, cut at
    the old branch's length, under the old `current_message_id`."""
    await send(client, "one", session_id="s")
    second = await send(client, "two", session_id="s")
    await send(client, "three", session_id="s")
    edited = await edit(client, second["user_message_id"], "two, edited")
    read_branch = message_queries.list_messages

    async def switched_meanwhile(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        # Once, between the read of the summary and the read of its branch.
        monkeypatch.setattr(message_queries, "list_messages", read_branch)
        await make_current(database, "s", uuid.UUID(second["user_message_id"]))
        return await read_branch(*args, **kwargs)

    monkeypatch.setattr(message_queries, "list_messages", switched_meanwhile)
    detail = await get_session(client, "s")

    assert detail["current_message_id"] == edited["message_id"]
    assert detail["message_count"] == len(detail["messages"]) == 4
    assert detail["messages"][-1]["id"] == detail["current_message_id"]
    assert (await get_session(client, "s"))["message_count"] == 6
