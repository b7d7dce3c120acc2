"""The sessions sidebar: list (order, pagination, filter, summaries), open and delete."""

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.kit.db.engine import Database
from app.kit.text import make_preview
from app.sessions import queries as session_queries
from tests.api.helpers import (
    ECHO_METADATA,
    NO_MATCH,
    echo_reply,
    get_session,
    list_sessions,
    parse_utc,
    reply_summary,
    send,
    session_url,
    stored_messages,
)

# --- List ---------------------------------------------------------------------------------


async def test_empty_list_uses_the_default_page(client: httpx.AsyncClient) -> None:
    assert await list_sessions(client) == {
        "sessions": [],
        "total": 0,
        "page": 1,
        "page_size": 50,
        "total_pages": 0,
        "next_cursor": None,
        "has_more": False,
    }


async def test_a_page_and_its_total_are_read_as_one_snapshot(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The total and the page are two statements; a session created between them is in
    neither (on PostgreSQL each statement saw the database as of its own start: a total of 1
    over a page of 2)."""
    await send(client, "first", session_id="s-1")
    count_sessions = session_queries.count_sessions

    async def created_between(*args: Any, **kwargs: Any) -> int:
        total = await count_sessions(*args, **kwargs)
        monkeypatch.setattr(session_queries, "count_sessions", count_sessions)
        await send(client, "second", session_id="s-2")
        return total

    monkeypatch.setattr(session_queries, "count_sessions", created_between)
    listed = await list_sessions(client)

    assert listed["total"] == len(listed["sessions"]) == 1
    assert (await list_sessions(client))["total"] == 2


async def test_list_has_the_documented_shape(client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    data = await send(client, "What payment processors do you support?", session_id="s-1")
    after = datetime.now(UTC)

    listed = await list_sessions(client)

    assert {k: v for k, v in listed.items() if k != "sessions"} == {
        "total": 1,
        "page": 1,
        "page_size": 50,
        "total_pages": 1,
        "next_cursor": None,
        "has_more": False,
    }
    [summary] = listed["sessions"]
    created_at = parse_utc(summary.pop("created_at"))
    updated_at = parse_utc(summary.pop("updated_at"))
    assert summary == {
        "session_id": "s-1",
        "title": "What payment processors do you support?",
        "title_source": "message",
        "last_message": make_preview(data["response"]),
        "message_count": 2,
        "pinned": False,
        "archived": False,
        "folder_id": None,
        "tags": [],
        **NO_MATCH,
    }
    assert before <= created_at <= updated_at <= after


async def test_newest_activity_first_and_continuing_moves_a_session_to_the_top(
    client: httpx.AsyncClient,
) -> None:
    for name in ("a", "b", "c"):
        await send(client, f"start {name}", session_id=name)

    listed = await list_sessions(client)
    assert [s["session_id"] for s in listed["sessions"]] == ["c", "b", "a"]
    updated = [parse_utc(s["updated_at"]) for s in listed["sessions"]]
    assert updated == sorted(updated, reverse=True)

    await send(client, "back to a", session_id="a")

    listed = await list_sessions(client)
    assert [s["session_id"] for s in listed["sessions"]] == ["a", "c", "b"]
    top = listed["sessions"][0]
    assert top["message_count"] == 4
    assert top["title"] == "start a"
    assert top["last_message"] == make_preview(echo_reply("back to a", 2))
    assert parse_utc(top["updated_at"]) > parse_utc(top["created_at"])
    assert parse_utc(top["updated_at"]) > parse_utc(listed["sessions"][1]["updated_at"])


async def test_pagination(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await send(client, f"session {i}", session_id=f"s{i}")
    newest_first = [f"s{i}" for i in reversed(range(7))]

    pages = [await list_sessions(client, page=page, page_size=3) for page in (1, 2, 3, 4)]

    assert [[s["session_id"] for s in p["sessions"]] for p in pages] == [
        newest_first[0:3],
        newest_first[3:6],
        newest_first[6:7],
        [],
    ]
    assert [(p["total"], p["page"], p["page_size"], p["total_pages"]) for p in pages] == [
        (7, 1, 3, 3),
        (7, 2, 3, 3),
        (7, 3, 3, 3),
        (7, 4, 3, 3),
    ]
    whole = await list_sessions(client, page_size=100)
    assert [s["session_id"] for s in whole["sessions"]] == newest_first
    assert (whole["page_size"], whole["total_pages"]) == (100, 1)


@pytest.mark.parametrize(
    ("count", "page_size", "total_pages"),
    [(1, 1, 1), (3, 1, 3), (4, 2, 2), (5, 2, 3), (5, 5, 1), (5, 6, 1)],
)
async def test_total_pages_rounds_up(
    client: httpx.AsyncClient, count: int, page_size: int, total_pages: int
) -> None:
    for i in range(count):
        await send(client, "hi", session_id=f"s{i}")

    listed = await list_sessions(client, page_size=page_size)

    assert (listed["total"], listed["total_pages"]) == (count, total_pages)
    assert len(listed["sessions"]) == min(count, page_size)


async def test_user_id_filter(client: httpx.AsyncClient) -> None:
    await send(client, "a1", session_id="a1", user_id="alice")
    await send(client, "b1", session_id="b1", user_id="bob")
    await send(client, "a2", session_id="a2", user_id="alice")
    await send(client, "anon", session_id="anon")
    await send(client, "percent", session_id="pct", user_id="100%")

    async def ids(**params: str | int) -> tuple[list[str], int]:
        data = await list_sessions(client, **params)
        return [s["session_id"] for s in data["sessions"]], data["total"]

    assert await ids(user_id="alice") == (["a2", "a1"], 2)
    assert await ids(user_id="bob") == (["b1"], 1)
    assert await ids(user_id="carol") == ([], 0)
    assert await ids(user_id="alice", page_size=1, page=2) == (["a1"], 2)
    # SQL wildcards are plain characters, not patterns.
    assert await ids(user_id="%") == ([], 0)
    assert await ids(user_id="100%") == (["pct"], 1)
    assert await ids(user_id="_lice") == ([], 0)
    assert await ids() == (["pct", "anon", "a2", "b1", "a1"], 5)


async def test_title_is_the_first_user_message_with_whitespace_collapsed(
    client: httpx.AsyncClient,
) -> None:
    await send(client, "  Hello\n\n   world\t again  ", session_id="s")
    await send(client, "a later message", session_id="s")

    session = await get_session(client, "s")

    assert session["title"] == "Hello world again"


async def test_long_title_is_cut_to_50_chars_with_ellipsis(client: httpx.AsyncClient) -> None:
    await send(client, "word " * 30, session_id="s")

    title = (await get_session(client, "s"))["title"]

    assert title == "word " * 9 + "wo..."
    assert len(title) == 50


async def test_title_of_exactly_50_chars_is_not_cut(client: httpx.AsyncClient) -> None:
    await send(client, "x" * 50, session_id="s")

    assert (await get_session(client, "s"))["title"] == "x" * 50


async def test_last_message_is_the_reply_cut_to_100_chars(client: httpx.AsyncClient) -> None:
    data = await send(client, "a   short\tquestion", session_id="s")

    last = (await get_session(client, "s"))["last_message"]

    collapsed = " ".join(data["response"].split())
    assert len(collapsed) > 100
    assert len(last) == 100
    assert last == collapsed[:97] + "..."
    assert last.startswith('You said: "a short question". I can see 1 of your messages')


# --- Open ---------------------------------------------------------------------------------


async def test_open_session_returns_summary_and_messages_oldest_first(
    client: httpx.AsyncClient, database: Database
) -> None:
    before = datetime.now(UTC)
    replies = [await send(client, f"message {i}", session_id="s") for i in range(3)]
    after = datetime.now(UTC)

    session = await get_session(client, "s")

    [summary] = (await list_sessions(client))["sessions"]
    paging = {"messages", "has_more_messages", "messages_before", "current_message_id"}
    assert {k: v for k, v in session.items() if k not in paging} == {
        k: v for k, v in summary.items() if k not in NO_MATCH
    }
    assert (session["has_more_messages"], session["messages_before"]) == (False, None)
    messages = session["messages"]
    assert session["current_message_id"] == messages[-1]["id"]
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5, 6]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "message 0"),
        ("assistant", echo_reply("message 0", 1)),
        ("user", "message 1"),
        ("assistant", echo_reply("message 1", 2)),
        ("user", "message 2"),
        ("assistant", echo_reply("message 2", 3)),
    ]
    assert [reply_summary(m["metadata"]) for m in messages] == [{}, ECHO_METADATA] * 3
    assert [m["id"] for m in messages[1::2]] == [r["message_id"] for r in replies]
    assert len({uuid.UUID(m["id"]) for m in messages}) == 6
    stamps = [parse_utc(m["created_at"]) for m in messages]
    assert stamps == sorted(stamps)
    assert before <= stamps[0]
    assert stamps[-1] <= after
    assert parse_utc(session["created_at"]) == stamps[0]
    assert parse_utc(session["updated_at"]) == stamps[-1]
    rows = await stored_messages(database, "s")
    assert [str(r["id"]) for r in rows] == [m["id"] for m in messages]


async def test_open_unknown_session_is_404(client: httpx.AsyncClient) -> None:
    await send(client, "hi", session_id="exists")

    response = await client.get(session_url("does-not-exist"))

    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found"}


INVALID_PATH_IDS = [
    pytest.param("a" * 129, id="129-chars"),
    pytest.param("a.b", id="dot"),
    pytest.param("has%20space", id="space"),
    pytest.param("semi%3Bcolon", id="semicolon"),
    pytest.param("%C3%A9t%C3%A9", id="non-ascii"),
    pytest.param("nul%00", id="nul"),
]


@pytest.mark.parametrize("raw_id", INVALID_PATH_IDS)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_invalid_session_id_in_path_is_422(
    client: httpx.AsyncClient, method: str, raw_id: str
) -> None:
    # The id is given already percent-encoded so that it reaches the route as written.
    response = await client.request(method, httpx.URL(session_url(raw_id)))

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "session_id"]


async def test_slash_in_session_id_does_not_reach_the_session_route(
    client: httpx.AsyncClient,
) -> None:
    await send(client, "hi", session_id="a")

    response = await client.get(session_url("a/b"))

    assert response.status_code == 404
    assert (await list_sessions(client))["total"] == 1


# --- Delete -------------------------------------------------------------------------------


async def test_delete_session_removes_it_and_its_messages(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "keep me", session_id="keep")
    await send(client, "delete me", session_id="gone")
    await send(client, "delete me too", session_id="gone")
    assert len(await stored_messages(database, "gone")) == 4

    response = await client.delete(session_url("gone"))

    assert response.status_code == 204
    assert response.content == b""
    missing = await client.get(session_url("gone"))
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Session not found"}
    listed = await list_sessions(client)
    assert [s["session_id"] for s in listed["sessions"]] == ["keep"]
    assert listed["total"] == 1
    assert await stored_messages(database, "gone") == []
    assert len(await stored_messages(database, "keep")) == 2

    again = await client.delete(session_url("gone"))
    assert again.status_code == 404
    assert again.json() == {"detail": "Session not found"}


async def test_delete_unknown_session_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete(session_url("never-existed"))

    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found"}


async def test_a_deleted_session_id_can_be_used_again(client: httpx.AsyncClient) -> None:
    await send(client, "old", session_id="s")
    assert (await client.delete(session_url("s"))).status_code == 204

    data = await send(client, "new", session_id="s")

    assert data["response"] == echo_reply("new", 1)
    session = await get_session(client, "s")
    assert session["message_count"] == 2
    assert session["title"] == "new"
    assert [m["content"] for m in session["messages"]] == ["new", echo_reply("new", 1)]
