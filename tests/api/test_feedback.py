"""Thumbs on replies (issue 14): PUT and DELETE .../messages/{message_id}/feedback, feedback in
the session detail, the tree and the export, and GET /api/v1/feedback, over HTTP on both
databases."""

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from app.feedback import queries as feedback_queries
from app.feedback.schemas import MessageFeedback
from app.kit.db.engine import Database
from app.kit.db.tables import chat_feedback
from tests.api.conftest import bearer
from tests.api.helpers import (
    Json,
    ScriptedAssistant,
    get_session,
    open_stream,
    parse_utc,
    send,
    session_url,
    use_assistant,
)
from tests.conftest import LiveServer
from tests.tokens import hs256_token

FEEDBACK_LIST = "/api/v1/feedback"
FEEDBACK_KEYS = {"rating", "comment", "updated_at"}
ITEM_KEYS = {
    "session_id",
    "user_id",
    "rating",
    "comment",
    "created_at",
    "updated_at",
    "stored_at",
    "message",
    "answered",
}


def feedback_url(session_id: str, message_id: str) -> str:
    return f"{session_url(session_id)}/messages/{message_id}/feedback"


async def rate(
    client: httpx.AsyncClient,
    session_id: str,
    message_id: str,
    body: Json,
    headers: dict[str, str] | None = None,
) -> Json:
    response = await client.put(feedback_url(session_id, message_id), json=body, headers=headers)
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == FEEDBACK_KEYS
    parse_utc(data["updated_at"])
    return data


async def stored_feedback(database: Database) -> list[dict[str, object]]:
    async with database.read() as conn:
        rows = await conn.execute(select(chat_feedback).order_by(chat_feedback.c.message_id))
        return [dict(row) for row in rows.mappings()]


def by_id(detail: Json) -> dict[str, Json]:
    return {message["id"]: message for message in detail["messages"]}


# --- Setting, replacing, clearing ---------------------------------------------------------


async def test_set_replace_and_clear_a_replys_feedback(
    client: httpx.AsyncClient, database: Database
) -> None:
    exchange = await send(client, "How do refunds work?", session_id="rated")
    reply_id, question_id = exchange["message_id"], exchange["user_message_id"]

    first = await rate(client, "rated", reply_id, {"rating": "up", "comment": "Clear answer"})

    assert (first["rating"], first["comment"]) == ("up", "Clear answer")
    messages = by_id(await get_session(client, "rated"))
    assert messages[reply_id]["feedback"] == first
    assert messages[question_id]["feedback"] is None
    [row] = await stored_feedback(database)
    assert (row["session_id"], row["user_id"], row["message_id"]) == (
        "rated",
        None,
        uuid.UUID(reply_id),
    )
    # Only what identifies the message and the rating: no copy of the conversation.
    assert set(row) == {
        "message_id",
        "session_id",
        "user_id",
        "rating",
        "comment",
        "created_at",
        "updated_at",
        "stored_at",
    }
    assert row["stored_at"] == row["updated_at"]

    # Setting it again replaces all of it, the comment included.
    second = await rate(client, "rated", reply_id, {"rating": "down"})

    assert (second["rating"], second["comment"]) == ("down", None)
    assert parse_utc(second["updated_at"]) >= parse_utc(first["updated_at"])
    assert by_id(await get_session(client, "rated"))[reply_id]["feedback"] == second
    [replaced] = await stored_feedback(database)
    assert replaced["created_at"] == row["created_at"]
    assert replaced["stored_at"] == replaced["updated_at"] == parse_utc(second["updated_at"])

    cleared = await client.delete(feedback_url("rated", reply_id))

    assert cleared.status_code == 204, cleared.text
    assert cleared.content == b""
    assert by_id(await get_session(client, "rated"))[reply_id]["feedback"] is None
    assert await stored_feedback(database) == []
    # Clearing what is not there is not an error (idempotent).
    again = await client.delete(feedback_url("rated", reply_id))
    assert again.status_code == 204, again.text


async def test_a_blank_comment_is_no_comment(client: httpx.AsyncClient) -> None:
    exchange = await send(client, "Hello", session_id="blank")

    rated = await rate(client, "blank", exchange["message_id"], {"rating": "up", "comment": " \n "})

    assert rated["comment"] is None


async def test_comment_limits(client: httpx.AsyncClient, database: Database) -> None:
    exchange = await send(client, "Hello", session_id="limits")
    reply_id = exchange["message_id"]
    longest = "é" * 2_000

    rated = await rate(client, "limits", reply_id, {"rating": "up", "comment": longest})
    assert rated["comment"] == longest

    for body in (
        {"rating": "down", "comment": longest + "x"},
        {"rating": "down", "comment": "nul \u0000 here"},
        {"rating": "meh"},
        {"rating": "UP"},
        {"rating": True},
        {"comment": "no rating"},
        {"rating": "down", "comment": 5},
        {"rating": "down", "extra": "field"},
    ):
        response = await client.put(feedback_url("limits", reply_id), json=body)
        assert response.status_code == 422, (body, response.text)
        assert isinstance(response.json()["detail"], list)

    [row] = await stored_feedback(database)
    assert (row["rating"], row["comment"]) == ("up", longest)


# --- What cannot be rated -----------------------------------------------------------------


async def test_a_user_message_cannot_be_rated(
    client: httpx.AsyncClient, database: Database
) -> None:
    exchange = await send(client, "Hello", session_id="own-words")
    question = exchange["user_message_id"]

    response = await client.put(feedback_url("own-words", question), json={"rating": "up"})
    cleared = await client.delete(feedback_url("own-words", question))

    assert response.status_code == 422, response.text
    assert response.json() == {"detail": "Only an assistant message can be rated"}
    assert cleared.status_code == 422, cleared.text
    assert await stored_feedback(database) == []


async def test_unknown_messages_and_sessions_are_404_and_change_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    mine = await send(client, "Hello", session_id="mine")
    other = await send(client, "Hello there", session_id="other")
    await rate(client, "mine", mine["message_id"], {"rating": "up"})
    before = await stored_feedback(database)
    detail_before = await get_session(client, "mine")

    cases = [
        # No such message at all.
        ("mine", str(uuid.uuid4()), {"detail": "Message not found in this session"}),
        # A message of another session, named under this one.
        ("mine", other["message_id"], {"detail": "Message not found in this session"}),
        # No such session.
        ("no-such-session", mine["message_id"], {"detail": "Session not found"}),
    ]
    for session_id, message_id, expected in cases:
        for method in ("PUT", "DELETE"):
            response = await client.request(
                method, feedback_url(session_id, message_id), json={"rating": "down"}
            )
            assert response.status_code == 404, (method, session_id, response.text)
            assert response.json() == expected

    assert await stored_feedback(database) == before
    assert await get_session(client, "mine") == detail_before
    assert by_id(await get_session(client, "other"))[other["message_id"]]["feedback"] is None


async def test_another_users_session_is_a_404_like_a_missing_one(
    auth_client: httpx.AsyncClient, database: Database
) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(hs256_token("bob"))
    created = await auth_client.post(
        "/api/v1/chat", json={"message": "Alice asks", "session_id": "alices"}, headers=alice
    )
    assert created.status_code == 200, created.text
    reply_id = created.json()["message_id"]
    await rate(auth_client, "alices", reply_id, {"rating": "up", "comment": "mine"}, alice)
    before = await stored_feedback(database)

    for method in ("PUT", "DELETE"):
        as_bob = await auth_client.request(
            method, feedback_url("alices", reply_id), json={"rating": "down"}, headers=bob
        )
        missing = await auth_client.request(
            method, feedback_url("nobodys", reply_id), json={"rating": "down"}, headers=bob
        )
        assert as_bob.status_code == missing.status_code == 404, as_bob.text
        assert as_bob.content == missing.content
        assert as_bob.json() == {"detail": "Session not found"}

    assert await stored_feedback(database) == before
    [row] = before
    assert (row["user_id"], row["comment"]) == ("alice", "mine")
    # A service caller acts on anyone's session; the rating stays the owner's.
    service = bearer(hs256_token("backend", role="service_role"))
    await rate(auth_client, "alices", reply_id, {"rating": "down"}, service)
    [row] = await stored_feedback(database)
    assert (row["user_id"], row["rating"]) == ("alice", "down")


async def test_a_reply_still_being_written_cannot_be_rated_yet(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["first ", "second"], gate=gate)

    with use_assistant(live_server, assistant):
        async with open_stream(live_server, {"message": "hi", "session_id": "busy"}) as stream:
            await stream.read_until("delta")
            [_, reply] = (await get_session(client, "busy"))["messages"]
            assert reply["metadata"]["status"] == "generating"

            early = await client.put(feedback_url("busy", reply["id"]), json={"rating": "up"})

            assert early.status_code == 409, early.text
            assert early.json() == {
                "detail": "This reply is still being written; rate it once it has finished"
            }
            gate.set()
            await stream.read_until("done")
    assert await stored_feedback(database) == []

    await rate(client, "busy", reply["id"], {"rating": "up"})


async def test_rating_a_reply_while_its_session_is_deleted_never_fails(
    client: httpx.AsyncClient, database: Database
) -> None:
    # Several times: which of the two goes first is up to the server (both orders must work).
    for index in range(10):
        exchange = await send(client, "Hello", session_id=f"race-{index}")

        rated, deleted = await asyncio.gather(
            client.put(
                feedback_url(f"race-{index}", exchange["message_id"]), json={"rating": "up"}
            ),
            client.delete(session_url(f"race-{index}")),
        )

        assert rated.status_code in (200, 404), rated.text
        assert deleted.status_code == 204, deleted.text
    # A rating that came first went with its session.
    assert await stored_feedback(database) == []


# --- Where feedback shows -----------------------------------------------------------------


async def test_feedback_shows_in_the_detail_the_tree_and_the_export_and_goes_with_the_session(
    client: httpx.AsyncClient, database: Database
) -> None:
    first = await send(client, "First question", session_id="shown")
    second = await send(client, "Second question", session_id="shown")
    rated = await rate(client, "shown", second["message_id"], {"rating": "down", "comment": "No"})

    # A page of the detail.
    page = await client.get(session_url("shown"), params={"limit": 1})
    assert page.status_code == 200, page.text
    [last] = page.json()["messages"]
    assert (last["id"], last["feedback"]) == (second["message_id"], rated)

    # A fork beside the current branch: the tree (JSON export) has every branch.
    edit = await client.post(
        "/api/v1/chat",
        json={"message": "Edited", "session_id": "shown", "edit_of": second["user_message_id"]},
    )
    assert edit.status_code == 200, edit.text
    await rate(client, "shown", edit.json()["message_id"], {"rating": "up"})
    exported = await client.get(f"{session_url('shown')}/export", params={"format": "json"})
    assert exported.status_code == 200, exported.text
    tree = by_id(json.loads(exported.text))
    assert len(tree) == 6
    assert tree[second["message_id"]]["feedback"] == rated
    assert tree[edit.json()["message_id"]]["feedback"]["rating"] == "up"
    assert tree[first["message_id"]]["feedback"] is None
    assert all(m["feedback"] is None for m in tree.values() if m["role"] == "user")
    # The current branch (the edit's) shows its own reply's rating only.
    current = by_id(await get_session(client, "shown"))
    assert current[edit.json()["message_id"]]["feedback"]["rating"] == "up"
    assert second["message_id"] not in current

    deleted = await client.delete(session_url("shown"))
    assert deleted.status_code == 204, deleted.text
    assert await stored_feedback(database) == []


async def test_deleting_all_of_a_users_sessions_deletes_their_feedback(
    client: httpx.AsyncClient, database: Database
) -> None:
    gone = await send(client, "Hello", session_id="gone", user_id="carol")
    kept = await send(client, "Hello", session_id="kept", user_id="dave")
    await rate(client, "gone", gone["message_id"], {"rating": "up"})
    await rate(client, "kept", kept["message_id"], {"rating": "up"})

    response = await client.delete("/api/v1/chat/sessions", params={"user_id": "carol"})

    assert response.status_code == 200, response.text
    assert [row["session_id"] for row in await stored_feedback(database)] == ["kept"]


async def test_ratings_of_a_page_or_of_a_whole_long_session_are_found_alike(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Up to 500 messages their ratings are looked up by id, beyond that by session (one
    query either way): both find the same."""
    exchange = await send(client, "Hello", session_id="long")
    rated = await rate(client, "long", exchange["message_id"], {"rating": "up", "comment": "ok"})
    other = await send(client, "Hello", session_id="other-long")
    await rate(client, "other-long", other["message_id"], {"rating": "down"})
    reply_id = uuid.UUID(exchange["message_id"])
    unrated = [uuid.uuid4() for _ in range(600)]

    for ids in ([reply_id, *unrated[:10]], [reply_id, *unrated]):
        rows: list[dict[str, Any]] = [{"id": message_id} for message_id in ids]
        async with database.read() as conn:
            await feedback_queries.add_feedback(conn, "long", rows)
        [found] = [row for row in rows if row["feedback"] is not None]
        assert found["id"] == reply_id
        assert MessageFeedback.model_validate(found["feedback"]).model_dump(mode="json") == rated


# --- The export: GET /api/v1/feedback -----------------------------------------------------


async def list_feedback(
    client: httpx.AsyncClient, *, headers: dict[str, str] | None = None, **params: str | int
) -> Json:
    response = await client.get(FEEDBACK_LIST, params=params, headers=headers)
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == {"feedback", "next_cursor", "has_more"}
    for item in data["feedback"]:
        assert set(item) == ITEM_KEYS
    return data


async def rated_sessions(client: httpx.AsyncClient, count: int) -> list[tuple[Json, Json]]:
    """`count` sessions with one rated exchange each, rated in order: (exchange, feedback)."""
    rated = []
    for index in range(count):
        exchange = await send(client, f"Question {index}", session_id=f"s{index}", user_id="erin")
        feedback = await rate(
            client,
            f"s{index}",
            exchange["message_id"],
            {"rating": "up" if index % 2 else "down", "comment": f"comment {index}"},
        )
        rated.append((exchange, feedback))
    return rated


async def test_the_export_lists_feedback_with_its_reply_model_and_question(
    client: httpx.AsyncClient,
) -> None:
    [(exchange, feedback)] = await rated_sessions(client, 1)

    listed = await list_feedback(client)

    assert listed["has_more"] is False
    assert listed["next_cursor"] is None
    [item] = listed["feedback"]
    assert item["session_id"] == "s0"
    assert item["user_id"] == "erin"
    assert (item["rating"], item["comment"]) == ("down", "comment 0")
    assert item["updated_at"] == feedback["updated_at"]
    assert item["created_at"] == feedback["updated_at"]
    assert item["message"] == {
        "id": exchange["message_id"],
        "content": exchange["response"],
        "provider": "echo",
        "model": "echo-1",
    }
    assert item["answered"] == {"id": exchange["user_message_id"], "content": "Question 0"}


async def test_the_export_pages_by_cursor_and_filters_by_time(client: httpx.AsyncClient) -> None:
    rated = await rated_sessions(client, 5)
    # Rated again: it moves to the end (ordered by the time it was last set).
    moved, _ = rated[1]
    again = await rate(client, "s1", moved["message_id"], {"rating": "down"})
    expected_order = [e["message_id"] for e, _ in rated if e is not moved] + [moved["message_id"]]

    page = await list_feedback(client, limit=2)
    seen = [item["message"]["id"] for item in page["feedback"]]
    pages = 1
    while page["has_more"]:
        page = await list_feedback(client, limit=2, cursor=page["next_cursor"])
        pages += 1
        seen += [item["message"]["id"] for item in page["feedback"]]
        assert page["has_more"] == (page["next_cursor"] is not None)
    assert page["next_cursor"] is None
    assert seen == expected_order
    assert pages == 3
    assert [i["message"]["id"] for i in (await list_feedback(client, limit=500))["feedback"]] == (
        expected_order
    )

    # `since`: what was set or changed at or after a moment, with a cursor too.
    third = rated[2][1]["updated_at"]
    since = await list_feedback(client, since=third)
    assert [item["message"]["id"] for item in since["feedback"]] == expected_order[1:]
    later = parse_utc(again["updated_at"]) + timedelta(microseconds=1)
    assert (await list_feedback(client, since=later.isoformat()))["feedback"] == []
    # Without a time zone: UTC.
    naive = parse_utc(third).replace(tzinfo=None).isoformat()
    assert (await list_feedback(client, since=naive)) == since
    first = await list_feedback(client, since=third, limit=1)
    rest = await list_feedback(client, since=third, cursor=first["next_cursor"], limit=10)
    assert [i["message"]["id"] for i in first["feedback"] + rest["feedback"]] == (
        expected_order[1:]
    )


async def test_the_export_refuses_cursors_it_did_not_issue(client: httpx.AsyncClient) -> None:
    for index in range(2):
        await send(client, "Hello", session_id=f"c{index}")
    sessions = await client.get("/api/v1/chat/sessions", params={"limit": 1})
    sessions_cursor = sessions.json()["next_cursor"]
    assert isinstance(sessions_cursor, str)

    for cursor in (sessions_cursor, "abc", "e30"):
        response = await client.get(FEEDBACK_LIST, params={"cursor": cursor})
        assert response.status_code == 422, (cursor, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    for params in (
        {"limit": 0},
        {"limit": 501},
        {"since": "yesterday"},
        # Pydantic would read these as seconds since 1970; the schema asks for ISO 8601 text.
        {"since": "1052994"},
        {"since": "20261207"},
        {"since": "1.5"},
    ):
        response = await client.get(FEEDBACK_LIST, params=params)
        assert response.status_code == 422, (params, response.text)


async def test_only_service_callers_may_list_feedback(auth_client: httpx.AsyncClient) -> None:
    for user in ("alice", "bob"):
        created = await auth_client.post(
            "/api/v1/chat",
            json={"message": f"{user} asks", "session_id": f"{user}s"},
            headers=bearer(hs256_token(user)),
        )
        assert created.status_code == 200, created.text
        await rate(
            auth_client,
            f"{user}s",
            created.json()["message_id"],
            {"rating": "up"},
            bearer(hs256_token(user)),
        )

    as_user = await auth_client.get(FEEDBACK_LIST, headers=bearer(hs256_token("alice")))
    anonymous = await auth_client.get(FEEDBACK_LIST)
    as_service = await list_feedback(
        auth_client, headers=bearer(hs256_token("backend", role="service_role"))
    )

    assert as_user.status_code == 403, as_user.text
    assert as_user.json() == {"detail": "only service callers may list feedback"}
    assert anonymous.status_code == 401, anonymous.text
    assert {item["user_id"] for item in as_service["feedback"]} == {"alice", "bob"}
