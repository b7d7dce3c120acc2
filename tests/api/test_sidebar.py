"""The sidebar at scale and its organising: cursor pagination (and why page mode is not
enough while sessions move), rename, pin, archive, delete all, export, and message paging.

Over HTTP against the live app, on SQLite and PostgreSQL. Sessions that need exact times
(ties, a known order) are stored through the queries layer with a fixed `now`; everything a
user does during a test goes through the API.
"""

import base64
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.assistants import AssistantError
from app.domain import Role
from app.kit.db.engine import Database
from app.kit.db.tables import chat_sessions
from app.kit.text import make_preview, make_title
from app.messages import queries as message_queries
from app.sessions import queries as session_queries
from tests.api.conftest import bearer
from tests.api.helpers import (
    CHAT,
    DETAIL_KEYS,
    LIST_ITEM_KEYS,
    LIST_KEYS,
    NO_MATCH,
    SESSIONS,
    SUMMARY_KEYS,
    Json,
    ScriptedAssistant,
    count_rows,
    get_session,
    list_sessions,
    parse_utc,
    send,
    send_stream,
    session_url,
    stored_messages,
    use_assistant,
)
from tests.conftest import LiveServer
from tests.tokens import hs256_token

BASE = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)

Params = dict[str, str | int]


# --- Helpers ------------------------------------------------------------------------------


async def seed_sessions(
    database: Database,
    session_ids: Sequence[str],
    *,
    user_id: str | None = None,
    at: Callable[[int], datetime] | None = None,
) -> None:
    """Store each session with one user message, at `at(n)` (default: one second apart, so
    the last is the newest)."""
    async with database.write() as conn:
        for n, session_id in enumerate(session_ids):
            now = BASE + timedelta(seconds=n) if at is None else at(n)
            await session_queries.create_session_if_absent(
                conn, session_id=session_id, user_id=user_id, now=now
            )
            content = f"about {session_id}"
            stored = await message_queries.append_message(
                conn,
                session_id=session_id,
                role="user",
                content=content,
                metadata={},
                title=make_title(content),
                preview=make_preview(content),
                now=now,
            )
            assert stored is not None


async def set_pinned(database: Database, session_ids: Sequence[str]) -> None:
    async with database.write() as conn:
        await conn.execute(
            update(chat_sessions)
            .where(chat_sessions.c.session_id.in_(session_ids))
            .values(pinned=True)
        )


async def sidebar_order(
    database: Database, *, archived: bool = False, user_id: str | None = None
) -> list[str]:
    """The sidebar's order computed here from the stored rows (not by the database's ORDER
    BY): pinned first, then updated_at, then the internal id, all descending."""
    async with database.read() as conn:
        rows = (
            await conn.execute(
                select(
                    chat_sessions.c.session_id,
                    chat_sessions.c.user_id,
                    chat_sessions.c.active,
                    chat_sessions.c.pinned,
                    chat_sessions.c.updated_at,
                    chat_sessions.c.id,
                )
            )
        ).mappings()
        kept = [
            row
            for row in rows
            if row["active"] is not archived and (user_id is None or row["user_id"] == user_id)
        ]
    kept.sort(key=lambda row: (row["pinned"], row["updated_at"], row["id"]), reverse=True)
    return [row["session_id"] for row in kept]


def ids_of(page: Json) -> list[str]:
    return [summary["session_id"] for summary in page["sessions"]]


async def get_page(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: str | int
) -> Json:
    response = await client.get(SESSIONS, params=params, headers=headers)
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == LIST_KEYS
    for summary in data["sessions"]:
        assert set(summary) == LIST_ITEM_KEYS
        assert {key: summary[key] for key in NO_MATCH} == NO_MATCH
    return data


Between = Callable[[int, list[str]], Awaitable[None]]


async def scroll(
    client: httpx.AsyncClient,
    *,
    limit: int,
    between: Between | None = None,
    headers: dict[str, str] | None = None,
    **params: str | int,
) -> list[Json]:
    """Every page of a cursor-mode scroll, following `next_cursor` to the end; `between(n,
    ids shown so far)` runs after page n (1-based) when another page follows. Each page is
    checked for the cursor-mode shape."""
    pages: list[Json] = []
    cursor: str | None = None
    shown: list[str] = []
    while True:
        query: Params = {"limit": limit, **params}
        if cursor is not None:
            query["cursor"] = cursor
        page = await get_page(client, headers, **query)
        pages.append(page)
        shown += ids_of(page)
        assert page["page"] is None
        assert page["total_pages"] is None
        assert page["page_size"] == limit
        assert page["has_more"] is (page["next_cursor"] is not None)
        assert len(page["sessions"]) <= limit
        if not page["has_more"]:
            return pages
        assert len(page["sessions"]) == limit, "only the last page may be short"
        assert len(pages) < 200, "the scroll does not end"
        cursor = page["next_cursor"]
        assert isinstance(cursor, str)
        if between is not None:
            await between(len(pages), shown)


def scrolled_ids(pages: Sequence[Json]) -> list[str]:
    return [session_id for page in pages for session_id in ids_of(page)]


async def patch(client: httpx.AsyncClient, session_id: str, body: Json) -> Json:
    response = await client.patch(session_url(session_id), json=body)
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == SUMMARY_KEYS
    return data


def cursor_payload(cursor: str) -> Json:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    payload: Json = json.loads(raw)
    return payload


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def assert_validation_error(response: httpx.Response, loc: list[str | int]) -> Json:
    """A 422 with FastAPI's standard body, about `loc` only; the error."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail"}
    [error] = body["detail"]
    assert {"type", "loc", "msg", "input"} <= set(error)
    assert error["loc"] == loc
    assert isinstance(error["msg"], str)
    error_json: Json = error
    return error_json


# --- Cursor mode --------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 4, 8, 11])
async def test_cursor_scroll_shows_every_session_once_in_sidebar_order(
    client: httpx.AsyncClient, database: Database, count: int
) -> None:
    names = [f"s{n:02}" for n in range(count)]
    await seed_sessions(database, names)
    await set_pinned(database, names[0:count:3])  # the oldest, and every third
    expected = await sidebar_order(database)

    pages = await scroll(client, limit=4)

    assert scrolled_ids(pages) == expected
    assert len(expected) == count
    assert [len(page["sessions"]) for page in pages] == (
        [len(expected[i : i + 4]) for i in range(0, count, 4)] or [0]
    )
    assert all(page["total"] == count for page in pages)
    assert [page["has_more"] for page in pages] == [True] * (len(pages) - 1) + [False]
    assert pages[-1]["next_cursor"] is None
    # Pinned first, each part newest first.
    pinned = [s["pinned"] for page in pages for s in page["sessions"]]
    assert pinned == sorted(pinned, reverse=True)
    for part in (True, False):
        times = [
            parse_utc(s["updated_at"])
            for page in pages
            for s in page["sessions"]
            if s["pinned"] is part
        ]
        assert times == sorted(times, reverse=True)
    # The first page is page mode's first page.
    first = await list_sessions(client, page_size=4)
    assert first["sessions"] == pages[0]["sessions"]


async def test_cursor_mode_fields_and_skipping_the_total(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_sessions(database, [f"s{n}" for n in range(5)])

    first = await get_page(client, limit=2, page_size=7, page=3)
    second = await get_page(client, limit=2, cursor=first["next_cursor"], include_total="false")
    paged = await get_page(client, page=2, page_size=2, include_total="false")
    counted = await get_page(client, page=2, page_size=2)

    assert {k: v for k, v in first.items() if k not in ("sessions", "next_cursor")} == {
        "total": 5,
        "page": None,  # `page` and `page_size` are ignored in cursor mode
        "page_size": 2,
        "total_pages": None,
        "has_more": True,
    }
    assert ids_of(first) == ["s4", "s3"]
    assert (second["total"], second["page"], second["total_pages"]) == (None, None, None)
    assert ids_of(second) == ["s2", "s1"]
    assert second["has_more"] is True
    assert (paged["total"], paged["page"], paged["page_size"], paged["total_pages"]) == (
        None,
        2,
        2,
        None,
    )
    assert ids_of(paged) == ids_of(counted) == ["s2", "s1"]
    assert (counted["total"], counted["total_pages"]) == (5, 3)
    # Page mode answers has_more too; its cursor, if any, continues after the page.
    assert counted["has_more"] is True
    if counted["next_cursor"] is not None:
        switched = await get_page(client, limit=5, cursor=counted["next_cursor"])
        assert (ids_of(switched), switched["has_more"]) == (["s0"], False)
    last = await get_page(client, page=3, page_size=2)
    assert (ids_of(last), last["has_more"], last["next_cursor"]) == (["s0"], False, None)


@pytest.mark.parametrize("limit", [1, 4, 7])
async def test_sessions_with_the_same_updated_at_scroll_without_duplicates_or_gaps(
    client: httpx.AsyncClient, database: Database, limit: int
) -> None:
    names = [f"tie-{n:02}" for n in range(25)]
    await seed_sessions(database, names, at=lambda n: BASE)
    await set_pinned(database, names[:6])
    expected = await sidebar_order(database)

    pages = await scroll(client, limit=limit)

    assert scrolled_ids(pages) == expected
    assert sorted(expected) == names
    assert len({s["updated_at"] for page in pages for s in page["sessions"]}) == 1


async def test_cursor_scroll_with_filters(client: httpx.AsyncClient, database: Database) -> None:
    await seed_sessions(database, [f"a{n}" for n in range(5)], user_id="alice")
    await seed_sessions(database, [f"b{n}" for n in range(4)], user_id="bob")
    for session_id in ("a1", "a3", "b0"):
        await patch(client, session_id, {"archived": True})

    alices = await scroll(client, limit=2, user_id="alice")
    alices_archive = await scroll(client, limit=1, user_id="alice", archived="true")
    archive = await scroll(client, limit=2, archived="true")

    assert scrolled_ids(alices) == ["a4", "a2", "a0"]
    assert alices[0]["total"] == 3
    assert scrolled_ids(alices_archive) == ["a3", "a1"]
    assert alices_archive[0]["total"] == 2
    assert scrolled_ids(archive) == await sidebar_order(database, archived=True)
    assert sorted(scrolled_ids(archive)) == ["a1", "a3", "b0"]


async def test_cursor_from_another_users_scroll_shows_only_your_own_sessions(
    auth_client: httpx.AsyncClient, database: Database
) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(hs256_token("bob"))
    await seed_sessions(database, [f"a{n}" for n in range(4)], user_id="alice")
    await seed_sessions(
        database, [f"b{n}" for n in range(4)], user_id="bob", at=lambda n: BASE + timedelta(days=n)
    )

    alices_first = await get_page(auth_client, alice, limit=2)
    bobs_pages = await scroll(auth_client, limit=2, headers=bob)
    with_alices_cursor = await get_page(
        auth_client, bob, limit=2, cursor=alices_first["next_cursor"]
    )

    assert ids_of(alices_first) == ["a3", "a2"]
    assert scrolled_ids(bobs_pages) == ["b3", "b2", "b1", "b0"]
    # A cursor is a position, not a permission: bob gets his own sessions after it (a2's
    # time, BASE + 2 s: only b0, at BASE, is older).
    assert ids_of(with_alices_cursor) == ["b0"]
    assert with_alices_cursor["total"] == 4


def _far_time_cursor(moment: str) -> str:
    payload = {"v": 1, "p": False, "u": moment, "i": "0" * 32}
    return b64(json.dumps(payload).encode())


async def _cursor_case(client: httpx.AsyncClient, database: Database, how: str) -> str:
    """An invalid cursor, made from a real one where that matters."""
    await seed_sessions(database, ["s0", "s1", "s2"])
    real = (await get_page(client, limit=1))["next_cursor"]
    assert isinstance(real, str)
    payload = cursor_payload(real)
    raw = base64.urlsafe_b64decode(real + "=" * (-len(real) % 4))
    cases = {
        "garbage": "garbage",
        "not-in-the-alphabet": real[:-1] + "+",
        "padded": real + "=",
        "too-long": "A" * 513,
        "wrong-base64-length": real[:1],
        "base64-of-text": b64(b"not a cursor"),
        "tampered-json": b64(raw[:-1]),
        "version-2": b64(json.dumps({**payload, "v": 2}).encode()),
        "no-time-zone": b64(json.dumps({**payload, "u": "2025-11-03T10:45:23.512000"}).encode()),
        "pinned-as-text": b64(json.dumps({**payload, "p": "false"}).encode()),
        "bad-id": b64(json.dumps({**payload, "i": "xyz"}).encode()),
    }
    return cases[how]


@pytest.mark.parametrize(
    "how",
    [
        "garbage",
        "not-in-the-alphabet",
        "padded",
        "too-long",
        "wrong-base64-length",
        "base64-of-text",
        "tampered-json",
        "version-2",
        "no-time-zone",
        "pinned-as-text",
        "bad-id",
    ],
)
async def test_invalid_cursor_is_422_with_the_standard_body(
    client: httpx.AsyncClient, database: Database, how: str
) -> None:
    cursor = await _cursor_case(client, database, how)

    response = await client.get(SESSIONS, params={"cursor": cursor, "limit": 2})

    error = assert_validation_error(response, ["query", "cursor"])
    assert error["input"] == cursor


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_a_cursor_time_out_of_range_is_422_not_500(
    client: httpx.AsyncClient, moment: str
) -> None:
    cursor = _far_time_cursor(moment)

    response = await client.get(SESSIONS, params={"cursor": cursor, "limit": 2})

    assert_validation_error(response, ["query", "cursor"])


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00"])
async def test_a_cursor_at_the_ends_of_time_is_served(
    client: httpx.AsyncClient, database: Database, moment: str
) -> None:
    await seed_sessions(database, ["s0", "s1"])

    page = await get_page(client, cursor=_far_time_cursor(moment), limit=5)

    assert ids_of(page) == ([] if moment.startswith("0001") else ["s1", "s0"])


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        pytest.param({"limit": 0}, ["query", "limit"], id="limit-0"),
        pytest.param({"limit": 101}, ["query", "limit"], id="limit-101"),
        pytest.param({"limit": "ten"}, ["query", "limit"], id="limit-text"),
        pytest.param({"include_total": "maybe"}, ["query", "include_total"], id="include-total"),
        pytest.param({"archived": "maybe"}, ["query", "archived"], id="archived"),
    ],
)
async def test_invalid_list_parameters_are_422(
    client: httpx.AsyncClient, params: Params, loc: list[str | int]
) -> None:
    response = await client.get(SESSIONS, params=params)

    assert_validation_error(response, loc)


# --- Scrolling while sessions are written -------------------------------------------------


@dataclass
class Writer:
    """Writes to sessions through the API during a scroll, and remembers which sessions it
    moved (or removed) and which it only renamed."""

    client: httpx.AsyncClient
    moved: set[str] = field(default_factory=set)
    renamed: set[str] = field(default_factory=set)
    created: list[str] = field(default_factory=list)

    async def message(self, session_id: str) -> None:
        await send(self.client, f"more about {session_id}", session_id=session_id)
        self.moved.add(session_id)

    async def create(self) -> None:
        session_id = f"new-{len(self.created)}"
        await send(self.client, "a new chat", session_id=session_id)
        self.created.append(session_id)

    async def archive(self, session_id: str) -> None:
        await patch(self.client, session_id, {"archived": True})
        self.moved.add(session_id)

    async def unarchive(self, session_id: str) -> None:
        await patch(self.client, session_id, {"archived": False})
        self.moved.add(session_id)

    async def pin(self, session_id: str) -> None:
        await patch(self.client, session_id, {"pinned": True})
        self.moved.add(session_id)

    async def rename(self, session_id: str) -> None:
        # Not a move: organising leaves the activity time alone.
        await patch(self.client, session_id, {"title": f"renamed {session_id}"})
        self.renamed.add(session_id)

    async def delete(self, session_id: str) -> None:
        response = await self.client.delete(session_url(session_id))
        assert response.status_code == 204, response.text
        self.moved.add(session_id)


def assert_scroll_is_sound(initial: list[str], shown: list[str], writer: Writer) -> None:
    """No session twice; every session the writer did not move exactly once, in the order
    the scroll started with."""
    duplicates = sorted({s for s in shown if shown.count(s) > 1})
    assert not duplicates, f"shown twice: {duplicates}"
    untouched = [s for s in initial if s not in writer.moved]
    assert [s for s in shown if s in set(untouched)] == untouched, (
        f"skipped: {sorted(set(untouched) - set(shown))}"
    )
    assert writer.renamed - writer.moved <= set(shown)


async def test_cursor_scroll_while_sessions_are_written_never_repeats_or_skips(
    client: httpx.AsyncClient, database: Database
) -> None:
    names = [f"s{n:02}" for n in range(30)]
    await seed_sessions(database, names, at=lambda n: BASE + timedelta(seconds=n // 3))
    await set_pinned(database, ["s02", "s13", "s25"])
    initial = await sidebar_order(database)
    writer = Writer(client)

    async def between(page: int, shown: list[str]) -> None:
        ahead = [s for s in initial if s not in shown and s not in writer.moved]
        behind = [s for s in shown if s not in writer.moved]
        await writer.message(behind[-1])  # the session the cursor points at
        await writer.message(ahead[0])  # the session right after the cursor
        await writer.rename(ahead[1])
        await writer.create()
        if page == 1:
            await writer.pin(behind[-2])
            await writer.archive(ahead[2])
        elif page == 2:
            await writer.delete(behind[0])
            await writer.pin(ahead[3])
        elif page == 3:
            await writer.archive(behind[-3])
            await writer.message(ahead[4])

    pages = await scroll(client, limit=7, between=between)

    shown = scrolled_ids(pages)
    assert len(pages) >= 4
    assert_scroll_is_sound(initial, shown, writer)
    # What moved meanwhile sorts above the cursor: new sessions are not part of this scroll.
    assert not set(writer.created) & set(shown)
    assert len(shown) >= len(initial) - len(writer.moved)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_cursor_scroll_under_random_writes_never_repeats_or_skips(
    client: httpx.AsyncClient, database: Database, seed: int
) -> None:
    rng = random.Random(seed)
    names = [f"s{n:02}" for n in range(30)]
    await seed_sessions(database, names, at=lambda n: BASE + timedelta(seconds=rng.randrange(8)))
    await set_pinned(database, rng.sample(names, 4))
    writer = Writer(client)
    pre_archived = rng.sample(names, 3)
    for session_id in pre_archived:
        await writer.archive(session_id)
    writer.moved.clear()
    initial = await sidebar_order(database)

    async def between(page: int, shown: list[str]) -> None:
        live = [s for s in names if s not in writer.moved or s in pre_archived]
        for _ in range(rng.randrange(1, 5)):
            action = rng.choice(["message", "message", "create", "archive", "pin", "rename"])
            target = rng.choice(live)
            if action == "create":
                await writer.create()
            elif target in pre_archived and target not in writer.moved:
                await writer.unarchive(target)  # may appear once: it was not listed before
            elif target not in writer.moved:
                await getattr(writer, action)(target)

    pages = await scroll(client, limit=rng.choice([3, 5, 7]), between=between)

    assert_scroll_is_sound(initial, scrolled_ids(pages), writer)


async def _page_mode_then_cursor_mode(
    client: httpx.AsyncClient,
    database: Database,
    write: Callable[[Writer, str], Awaitable[None]],
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The same ten sessions and the same write after the first page of five, scrolled in
    page mode (user "page") and in cursor mode (user "cursor"): (page-mode order before,
    page-mode scroll, cursor-mode order before, cursor-mode scroll)."""
    result: list[list[str]] = []
    for mode in ("page", "cursor"):
        names = [f"{mode}-{n}" for n in range(10)]
        await seed_sessions(database, names, user_id=mode)
        initial = await sidebar_order(database, user_id=mode)
        writer = Writer(client)
        if mode == "page":
            first = await get_page(client, user_id=mode, page=1, page_size=5)
            await write(writer, mode)
            rest = [await get_page(client, user_id=mode, page=page, page_size=5) for page in (2, 3)]
            shown = scrolled_ids([first, *rest])
        else:

            async def between(
                page: int, shown: list[str], mode: str = mode, writer: Writer = writer
            ) -> None:
                if page == 1:
                    await write(writer, mode)

            shown = scrolled_ids(await scroll(client, limit=5, between=between, user_id=mode))
        result += [initial, shown]
    return result[0], result[1], result[2], result[3]


async def test_page_mode_shows_a_session_twice_after_a_write_and_cursor_mode_does_not(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Documents why cursor mode exists: a message in a session not yet shown lifts it to the
    top, every session above it moves down one place, and page 2 repeats page 1's last."""

    async def message_the_oldest(writer: Writer, mode: str) -> None:
        await send(writer.client, "lift me", session_id=f"{mode}-0", user_id=mode)

    page_initial, page_shown, cursor_initial, cursor_shown = await _page_mode_then_cursor_mode(
        client, database, message_the_oldest
    )

    assert page_initial == [f"page-{n}" for n in reversed(range(10))]
    assert page_shown.count("page-5") == 2  # the anomaly: shown on page 1 and on page 2
    assert page_shown == [*page_initial[:5], "page-5", *page_initial[5:9]]
    assert cursor_shown == cursor_initial[:9]  # each once; the moved one went to the top


async def test_page_mode_skips_a_session_after_an_archive_and_cursor_mode_does_not(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Documents the other page-mode anomaly: a shown session leaving the list moves every
    session below it up one place, and one nobody touched is never shown."""

    async def archive_the_newest(writer: Writer, mode: str) -> None:
        await patch(writer.client, f"{mode}-9", {"archived": True})

    page_initial, page_shown, cursor_initial, cursor_shown = await _page_mode_then_cursor_mode(
        client, database, archive_the_newest
    )

    assert "page-4" not in page_shown  # the anomaly: untouched, and skipped
    assert page_shown == [*page_initial[:5], *page_initial[6:]]
    assert cursor_shown == cursor_initial


async def test_unpinning_a_shown_session_mid_scroll_shows_it_again(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A known limit of the keyset (pinned, updated_at, id): unpinning is the one change that
    moves a session down, past the cursor, so a cursor scroll shows it a second time."""
    names = [f"s{n}" for n in range(6)]
    await seed_sessions(database, names)
    await set_pinned(database, ["s0"])

    async def between(page: int, shown: list[str]) -> None:
        if page == 1:
            await patch(client, "s0", {"pinned": False})

    shown = scrolled_ids(await scroll(client, limit=2, between=between))

    assert shown == ["s0", "s5", "s4", "s3", "s2", "s1", "s0"]


# --- Rename -------------------------------------------------------------------------------


async def test_rename_sets_the_title_with_whitespace_collapsed(
    client: httpx.AsyncClient,
) -> None:
    await send(client, "what the first message said", session_id="s")
    before = await get_session(client, "s")

    summary = await patch(client, "s", {"title": "  Q3\tplanning \n\n notes  "})

    assert summary["title"] == "Q3 planning notes"
    [listed] = (await list_sessions(client))["sessions"]
    assert {**summary, **NO_MATCH} == listed
    after = await get_session(client, "s")
    assert before["title_source"] == "message"
    assert after == {**before, "title": "Q3 planning notes", "title_source": "user"}


@pytest.mark.parametrize(
    "title",
    [
        pytest.param("x", id="1-char"),
        pytest.param("y" * 200, id="200-chars"),
        pytest.param("# **Bold** <b>html</b> & `code`", id="markup-kept-verbatim"),
        pytest.param("Café ☕ 👩‍💻 计划", id="unicode"),
    ],
)
async def test_rename_accepts_titles_of_1_to_200_characters(
    client: httpx.AsyncClient, title: str
) -> None:
    await send(client, "hello", session_id="s")

    summary = await patch(client, "s", {"title": title})

    assert summary["title"] == title
    assert (await get_session(client, "s"))["title"] == title


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        pytest.param({}, ["body"], id="empty-body"),
        pytest.param({"title": None}, ["body", "title"], id="only-null"),
        pytest.param({"title": ""}, ["body", "title"], id="empty-title"),
        pytest.param({"title": " \t\n "}, ["body", "title"], id="blank-title"),
        pytest.param({"title": "a\u0000b"}, ["body", "title"], id="nul"),
        pytest.param({"title": "z" * 201}, ["body", "title"], id="201-chars"),
        pytest.param({"title": 7}, ["body", "title"], id="title-not-text"),
        pytest.param({"pinned": "maybe"}, ["body", "pinned"], id="pinned-not-bool"),
        pytest.param({"archived": [True]}, ["body", "archived"], id="archived-not-bool"),
        pytest.param({"title": "ok", "colour": "red"}, ["body", "colour"], id="extra-field"),
        pytest.param({"session_id": "other"}, ["body", "session_id"], id="only-extra-field"),
        pytest.param(["title"], ["body"], id="not-an-object"),
    ],
)
async def test_invalid_updates_are_422_and_change_nothing(
    client: httpx.AsyncClient, body: Any, loc: list[str | int]
) -> None:
    await send(client, "hello", session_id="s")
    before = await get_session(client, "s")

    response = await client.patch(session_url("s"), json=body)

    assert_validation_error(response, loc)
    assert await get_session(client, "s") == before


async def test_a_title_set_by_hand_is_never_replaced_by_the_automatic_one(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "the automatic title", session_id="s")
    await patch(client, "s", {"title": "Mine"})

    await send(client, "a second message", session_id="s")
    await send_stream(client, {"message": "a streamed one", "session_id": "s"})

    session = await get_session(client, "s")
    assert session["title"] == "Mine"
    assert session["message_count"] == 6
    [listed] = (await list_sessions(client))["sessions"]
    assert listed["title"] == "Mine"
    # The automatic title is still set only on a session that has none.
    await seed_sessions(database, ["seeded"])
    assert (await get_session(client, "seeded"))["title"] == "about seeded"


async def test_organising_does_not_change_the_activity_time_or_the_order(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_sessions(database, ["a", "b", "c"])
    before = await get_session(client, "a")

    await patch(client, "a", {"title": "Renamed", "pinned": True, "archived": True})
    await patch(client, "a", {"pinned": False, "archived": False})

    after = await get_session(client, "a")
    assert after["updated_at"] == before["updated_at"] == "2020-01-01T12:00:00Z"
    assert after == {**before, "title": "Renamed", "title_source": "user"}
    assert ids_of(await list_sessions(client)) == ["c", "b", "a"]


# --- Pin and archive ----------------------------------------------------------------------


async def both_modes(client: httpx.AsyncClient, archived: str = "false") -> list[str]:
    """The list in page mode, asserted equal to a cursor-mode scroll of it."""
    paged = ids_of(await list_sessions(client, archived=archived))
    scrolled = scrolled_ids(await scroll(client, limit=2, archived=archived))
    assert paged == scrolled
    return paged


async def test_pinned_sessions_come_first_in_both_modes_and_unpinning_restores_order(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_sessions(database, ["a", "b", "c", "d"])
    assert await both_modes(client) == ["d", "c", "b", "a"]

    summary = await patch(client, "a", {"pinned": True})
    assert (summary["session_id"], summary["pinned"]) == ("a", True)
    assert await both_modes(client) == ["a", "d", "c", "b"]

    await patch(client, "b", {"pinned": True})
    assert await both_modes(client) == ["b", "a", "d", "c"]  # newest pinned first

    await send(client, "lift c", session_id="c")
    assert await both_modes(client) == ["b", "a", "c", "d"]  # activity does not beat a pin

    await patch(client, "a", {"pinned": False})
    await patch(client, "b", {"pinned": False})
    assert await both_modes(client) == ["c", "d", "b", "a"]
    assert not any(s["pinned"] for s in (await list_sessions(client))["sessions"])


async def test_archived_sessions_are_hidden_by_default_and_listed_with_the_filter(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_sessions(database, ["a", "b", "c"])

    summary = await patch(client, "b", {"archived": True})

    assert (summary["session_id"], summary["archived"]) == ("b", True)
    assert await both_modes(client) == ["c", "a"]
    assert await both_modes(client, archived="true") == ["b"]
    assert await both_modes(client, archived="false") == ["c", "a"]
    assert (await list_sessions(client))["total"] == 2
    archive = await list_sessions(client, archived="true")
    assert archive["total"] == 1
    assert archive["sessions"][0]["archived"] is True

    restored = await patch(client, "b", {"archived": False})

    assert restored["archived"] is False
    assert await both_modes(client) == ["c", "b", "a"]
    assert await both_modes(client, archived="true") == []


async def test_an_archived_session_can_be_opened_exported_and_continued(
    client: httpx.AsyncClient,
) -> None:
    await send(client, "old topic", session_id="s")
    await patch(client, "s", {"archived": True})

    opened = await get_session(client, "s")
    exported = await client.get(session_url("s") + "/export")
    await send(client, "picking it up again", session_id="s")

    assert opened["archived"] is True
    assert exported.status_code == 200
    session = await get_session(client, "s")
    assert session["message_count"] == 4
    # Only PATCH changes the archive state: the session stays archived.
    assert session["archived"] is True
    assert ids_of(await list_sessions(client, archived="true")) == ["s"]
    assert ids_of(await list_sessions(client)) == []


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        pytest.param("PATCH", "", {"pinned": True}, id="patch"),
        pytest.param("GET", "/export", None, id="export-json"),
        pytest.param("GET", "/export?format=markdown", None, id="export-markdown"),
        pytest.param("GET", "?limit=5", None, id="get-a-page"),
        pytest.param("GET", "", None, id="get"),
    ],
)
async def test_a_missing_session_is_404(
    client: httpx.AsyncClient, method: str, suffix: str, body: Json | None
) -> None:
    await send(client, "hi", session_id="exists")

    response = await client.request(method, session_url("missing") + suffix, json=body)

    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Session not found"}
    assert response.headers["content-type"] == "application/json"


# --- Delete all of a user's sessions -------------------------------------------------------


async def message_count_of(database: Database, session_ids: Sequence[str]) -> int:
    return sum([len(await stored_messages(database, s)) for s in session_ids])


async def test_delete_all_needs_a_user_in_open_mode(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "hi", session_id="a", user_id="alice")
    await send(client, "hi", session_id="n")

    response = await client.delete(SESSIONS)

    assert response.status_code == 400, response.text
    assert set(response.json()) == {"detail"}
    assert isinstance(response.json()["detail"], str)
    assert await count_rows(database) == (2, 4)


async def test_delete_all_removes_only_that_users_sessions_and_messages(
    client: httpx.AsyncClient, database: Database
) -> None:
    alices = ["a1", "a2", "a3"]
    for session_id in alices:
        await send(client, f"hi from {session_id}", session_id=session_id, user_id="alice")
    await send(client, "hi", session_id="b1", user_id="bob")
    await send(client, "hi", session_id="nobody")
    await patch(client, "a2", {"archived": True})  # archived ones go too
    assert await message_count_of(database, alices) == 6

    response = await client.delete(SESSIONS, params={"user_id": "alice"})

    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 3}
    assert await message_count_of(database, alices) == 0
    assert await count_rows(database) == (2, 4)
    assert sorted(ids_of(await list_sessions(client))) == ["b1", "nobody"]
    for session_id in alices:
        assert (await client.get(session_url(session_id))).status_code == 404

    again = await client.delete(SESSIONS, params={"user_id": "alice"})
    assert again.json() == {"deleted": 0}
    assert await count_rows(database) == (2, 4)


async def test_delete_all_with_an_empty_user_id_is_422(client: httpx.AsyncClient) -> None:
    await send(client, "hi", session_id="a", user_id="alice")

    response = await client.delete(SESSIONS, params={"user_id": ""})

    assert_validation_error(response, ["query", "user_id"])
    assert ids_of(await list_sessions(client)) == ["a"]


async def test_with_authentication_a_user_deletes_only_their_own_sessions(
    auth_client: httpx.AsyncClient, database: Database
) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(hs256_token("bob"))
    service = bearer(hs256_token("backend", role="service_role"))
    await seed_sessions(database, ["a1", "a2", "a3"], user_id="alice")
    await seed_sessions(database, ["b1", "b2"], user_id="bob")

    naming_bob = await auth_client.delete(SESSIONS, params={"user_id": "bob"}, headers=alice)
    own = await auth_client.delete(SESSIONS, headers=alice)

    assert naming_bob.status_code == 403, naming_bob.text
    assert naming_bob.json() == {"detail": "user_id may only name yourself"}
    assert own.status_code == 200, own.text
    assert own.json() == {"deleted": 3}
    assert ids_of(await get_page(auth_client, bob)) == ["b2", "b1"]
    assert ids_of(await get_page(auth_client, alice)) == []
    assert await count_rows(database) == (2, 2)

    by_service = await auth_client.delete(SESSIONS, params={"user_id": "bob"}, headers=service)

    assert by_service.json() == {"deleted": 2}
    assert await count_rows(database) == (0, 0)


# --- Export -------------------------------------------------------------------------------

# Markdown and HTML a user might type, which the export must neither render nor escape.
MARKUP = (
    "# Not a heading of the export\n\n"
    "<script>alert('x')</script> & <b>bold</b> &amp;\n"
    "---\n"
    "| a | b |\n|---|---|\n"
    "```python\nprint('*not italic*')\n```"
)


async def test_export_as_json_is_the_whole_session_as_a_download(
    client: httpx.AsyncClient,
) -> None:
    for n in range(3):
        await send(client, f"message {n}\n{MARKUP}" if n == 1 else f"message {n}", session_id="s")
    await patch(client, "s", {"title": "Exported <chat> & *more*"})

    response = await client.get(session_url("s") + "/export", params={"format": "json"})
    default = await client.get(session_url("s") + "/export")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == 'attachment; filename="chat-s.json"'
    exported = response.json()
    assert set(exported) == DETAIL_KEYS
    assert exported == await get_session(client, "s")
    assert [m["seq"] for m in exported["messages"]] == [1, 2, 3, 4, 5, 6]
    assert exported["messages"][2]["content"] == f"message 1\n{MARKUP}"
    assert exported["title"] == "Exported <chat> & *more*"
    assert (default.status_code, default.content) == (200, response.content)


async def test_export_as_json_has_every_message_of_a_long_session(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_long_session(database, "long", 520)

    response = await client.get(session_url("long") + "/export")

    assert response.status_code == 200, response.text
    assert [m["seq"] for m in response.json()["messages"]] == list(range(1, 521))


async def test_export_as_markdown_is_readable_in_order_and_verbatim(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    await send(client, "first question", session_id="md")
    failing = ScriptedAssistant([], fail_with=AssistantError("down", kind="unavailable"))
    with use_assistant(live_server, failing):
        failed = await client.post(CHAT, json={"message": MARKUP, "session_id": "md"})
    assert failed.status_code == 502, failed.text
    await send(client, "and again", session_id="md")
    await patch(client, "md", {"title": "Plans: <b>Q3</b> & *more*"})
    detail = await get_session(client, "md")

    response = await client.get(session_url("md") + "/export", params={"format": "markdown"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "text/markdown"
    assert "charset=utf-8" in response.headers["content-type"].replace(" ", "").lower()
    assert response.headers["content-disposition"] == 'attachment; filename="chat-md.md"'
    text = response.text
    assert text.splitlines()[0] == "# Plans: <b>Q3</b> & *more*"
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    roles = [m["role"] for m in detail["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert [h.split(" ")[1] for h in headings] == [r.capitalize() for r in roles]
    # The failed reply, and only it, is marked.
    assert [("(failed)" in h) for h in headings] == [False, False, False, True, False, False]
    # Each message's text, verbatim, in order: the user's markup is neither escaped nor lost.
    position = 0
    for message in detail["messages"]:
        body = message["content"] or "*(no reply)*"
        found = text.find(body, position)
        assert found >= 0, (body, text[position:])
        position = found + len(body)
    assert MARKUP in text
    assert "&lt;" not in text
    assert "&amp;amp;" not in text


async def test_export_in_an_unknown_format_is_422(client: httpx.AsyncClient) -> None:
    await send(client, "hi", session_id="s")

    response = await client.get(session_url("s") + "/export", params={"format": "pdf"})

    assert_validation_error(response, ["query", "format"])


# --- Long sessions: paging the messages ---------------------------------------------------


async def seed_long_session(database: Database, session_id: str, count: int) -> None:
    async with database.write() as conn:
        await session_queries.create_session_if_absent(
            conn, session_id=session_id, user_id=None, now=BASE
        )
        for n in range(1, count + 1):
            role: Role = "user" if n % 2 else "assistant"
            stored = await message_queries.append_message(
                conn,
                session_id=session_id,
                role=role,
                content=f"message {n}",
                metadata={},
                title=make_title(f"message {n}") if role == "user" else None,
                preview=make_preview(f"message {n}"),
                now=BASE + timedelta(seconds=n),
            )
            assert stored is not None
            assert stored.seq == n


async def open_page(client: httpx.AsyncClient, session_id: str, **params: int) -> Json:
    response = await client.get(session_url(session_id), params=params)
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == DETAIL_KEYS
    return data


def seqs(detail: Json) -> list[int]:
    return [m["seq"] for m in detail["messages"]]


async def test_message_pages_go_from_newest_to_oldest_each_oldest_first(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_long_session(database, "long", 25)

    newest = await open_page(client, "long", limit=10)
    middle = await open_page(client, "long", limit=10, before=newest["messages_before"])
    oldest = await open_page(client, "long", limit=10, before=middle["messages_before"])
    everything = await open_page(client, "long")

    assert seqs(newest) == list(range(16, 26))
    assert (newest["has_more_messages"], newest["messages_before"]) == (True, 16)
    assert seqs(middle) == list(range(6, 16))
    assert (middle["has_more_messages"], middle["messages_before"]) == (True, 6)
    assert seqs(oldest) == [1, 2, 3, 4, 5]
    assert (oldest["has_more_messages"], oldest["messages_before"]) == (False, None)
    assert seqs(everything) == list(range(1, 26))
    assert (everything["has_more_messages"], everything["messages_before"]) == (False, None)
    # The pages are the messages of the whole session, unchanged; the summary is the same.
    assert [*oldest["messages"], *middle["messages"], *newest["messages"]] == everything["messages"]
    summary = {k: v for k, v in everything.items() if k in SUMMARY_KEYS}
    for page in (newest, middle, oldest):
        assert {k: v for k, v in page.items() if k in SUMMARY_KEYS} == summary
    assert summary["message_count"] == 25
    assert [m["content"] for m in newest["messages"]] == [f"message {n}" for n in range(16, 26)]
    stamps = [parse_utc(m["created_at"]) for m in newest["messages"]]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize(
    ("params", "expected", "before"),
    [
        pytest.param({"limit": 25}, list(range(1, 26)), None, id="limit-equals-count"),
        pytest.param({"limit": 500}, list(range(1, 26)), None, id="limit-500"),
        pytest.param({"limit": 24}, list(range(2, 26)), 2, id="all-but-one"),
        pytest.param({"limit": 1}, [25], 25, id="limit-1"),
        pytest.param({"before": 2, "limit": 10}, [1], None, id="before-2"),
        pytest.param({"before": 1, "limit": 10}, [], None, id="before-1"),
        pytest.param({"before": 16}, list(range(1, 16)), None, id="before-without-limit"),
        pytest.param({"before": 1000, "limit": 3}, [23, 24, 25], 23, id="before-past-the-end"),
    ],
)
async def test_message_page_edges(
    client: httpx.AsyncClient,
    database: Database,
    params: dict[str, int],
    expected: list[int],
    before: int | None,
) -> None:
    await seed_long_session(database, "long", 25)

    page = await open_page(client, "long", **params)

    assert seqs(page) == expected
    assert (page["has_more_messages"], page["messages_before"]) == (before is not None, before)


async def test_paging_an_empty_session(client: httpx.AsyncClient, database: Database) -> None:
    async with database.write() as conn:
        await session_queries.create_session_if_absent(
            conn, session_id="empty", user_id=None, now=BASE
        )

    page = await open_page(client, "empty", limit=10)

    assert (page["messages"], page["has_more_messages"], page["messages_before"]) == (
        [],
        False,
        None,
    )


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        pytest.param({"limit": 0}, ["query", "limit"], id="limit-0"),
        pytest.param({"limit": 501}, ["query", "limit"], id="limit-501"),
        pytest.param({"limit": -1}, ["query", "limit"], id="limit-negative"),
        pytest.param({"before": 0, "limit": 5}, ["query", "before"], id="before-0"),
        pytest.param({"before": "x"}, ["query", "before"], id="before-text"),
    ],
)
async def test_invalid_message_paging_is_422(
    client: httpx.AsyncClient, database: Database, params: Params, loc: list[str | int]
) -> None:
    await seed_long_session(database, "long", 3)

    response = await client.get(session_url("long"), params=params)

    assert_validation_error(response, loc)
