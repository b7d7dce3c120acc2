"""Search (`q` on GET /api/v1/chat/sessions) over HTTP against the live app, on SQLite and
PostgreSQL: what matches, whose sessions, ranking and snippets, both ways to page and their
cursors, bad input, and the index kept exact by every write (renames, deletes, failed replies,
concurrent writers, VACUUM).

Sessions that need exact times are stored through the queries layer (the same write path the
service uses, indexing included); what a user does during a test goes through the API.
"""

import asyncio
import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.assistants import AssistantError
from app.domain import Role
from app.kit.db.engine import Database
from app.kit.db.tables import SEARCH_TITLE_SEQ, chat_search
from app.kit.text import make_preview, make_title
from app.messages import queries as message_queries
from app.search import fulltext
from app.search import service as search_service
from app.search.fulltext import FTS_TABLE, query_words, words
from app.search.snippets import make_snippet
from app.sessions import queries as session_queries
from tests.api.conftest import bearer
from tests.api.helpers import (
    CHAT,
    LIST_ITEM_KEYS,
    LIST_KEYS,
    SESSIONS,
    Json,
    ScriptedAssistant,
    send,
    send_stream,
    session_url,
    use_assistant,
)
from tests.conftest import LiveServer
from tests.db.test_fulltext import HOSTILE_QUERIES
from tests.tokens import hs256_token

BASE = datetime(2021, 6, 1, 9, 0, tzinfo=UTC)

Params = dict[str, str | int]
Message = tuple[Role, str]


# --- Helpers ------------------------------------------------------------------------------


async def store(
    database: Database,
    session_id: str,
    *messages: Message,
    user_id: str | None = None,
    at: int = 0,
) -> None:
    """Store a session and its messages `at` seconds after BASE, as the service writes them
    (the first user message gives the automatic title)."""
    now = BASE + timedelta(seconds=at)
    async with database.write() as conn:
        await session_queries.create_session_if_absent(
            conn, session_id=session_id, user_id=user_id, now=now
        )
        for role, content in messages:
            stored = await message_queries.append_message(
                conn,
                session_id=session_id,
                role=role,
                content=content,
                metadata={},
                title=make_title(content) if role == "user" else None,
                preview=make_preview(content) if content.strip() else None,
                now=now,
            )
            assert stored is not None


async def search(
    client: httpx.AsyncClient, q: str, headers: dict[str, str] | None = None, **params: str | int
) -> Json:
    response = await client.get(SESSIONS, params={"q": q, **params}, headers=headers)
    assert response.status_code == 200, response.text
    data: Json = response.json()
    assert set(data) == LIST_KEYS
    for item in data["sessions"]:
        assert set(item) == LIST_ITEM_KEYS
    return data


def ids_of(page: Json) -> list[str]:
    return [item["session_id"] for item in page["sessions"]]


def snippets_of(page: Json) -> dict[str, str | None]:
    return {item["session_id"]: item["snippet"] for item in page["sessions"]}


async def patch(client: httpx.AsyncClient, session_id: str, body: Json) -> None:
    response = await client.patch(session_url(session_id), json=body)
    assert response.status_code == 200, response.text


async def entries(database: Database, session_ids: Sequence[str] | None = None) -> list[Any]:
    """(session_id, seq) of the search entries, sorted; of `session_ids` only if given."""
    stmt = sa.select(chat_search.c.session_id, chat_search.c.seq)
    if session_ids is not None:
        stmt = stmt.where(chat_search.c.session_id.in_(session_ids))
    async with database.read() as conn:
        return sorted(tuple(row) for row in await conn.execute(stmt))


async def assert_index_consistent(database: Database) -> None:
    """On SQLite, the FTS5 index holds exactly chat_search's rows (rank 1: compared with the
    content table too, which the plain check skips for an external-content table)."""
    if database.engine.dialect.name != "sqlite":
        return
    async with database.write() as conn:
        await conn.exec_driver_sql(
            f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)"
        )


async def index_rows_matching(database: Database, word: str) -> list[int]:
    """The rowids the FTS5 index itself (not chat_search) returns for `word`, on SQLite."""
    if database.engine.dialect.name != "sqlite":
        return []
    async with database.read() as conn:
        rows = await conn.execute(
            sa.text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match"),
            {"match": fulltext.fts5_match([word], None)},
        )
        return [int(rowid) for rowid in rows.scalars()]


def assert_validation_error(response: httpx.Response, loc: list[str | int]) -> Json:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc
    error_json: Json = error
    return error_json


def b64(payload: Json) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


def decode(cursor: str) -> Json:
    payload: Json = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return payload


async def scroll(
    client: httpx.AsyncClient,
    q: str,
    *,
    limit: int,
    headers: dict[str, str] | None = None,
    **params: str | int,
) -> list[Json]:
    pages = [await search(client, q, headers, limit=limit, **params)]
    while pages[-1]["next_cursor"] is not None:
        assert pages[-1]["has_more"] is True
        assert len(pages) <= 50, "the scroll does not end"
        pages.append(
            await search(client, q, headers, limit=limit, cursor=pages[-1]["next_cursor"], **params)
        )
    assert pages[-1]["has_more"] is False
    return pages


# --- What matches -------------------------------------------------------------------------


async def test_finds_sessions_by_title_and_by_user_and_assistant_messages(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    with use_assistant(live_server, ScriptedAssistant(["Zeppelins float ", "on hydrogen."])):
        await send(client, "Tell me about airships", session_id="by-reply")
    await send(client, "Hello", session_id="by-user")
    await send(client, "And what about quasars in distant galaxies?", session_id="by-user")
    await send(client, "Hello", session_id="by-title")
    await patch(client, "by-title", {"title": "Budget planning for Q3"})
    await send(client, "Unrelated", session_id="other")

    assert ids_of(await search(client, "zeppelin")) == ["by-reply"]
    assert ids_of(await search(client, "hydrogen")) == ["by-reply"]
    assert ids_of(await search(client, "airships")) == ["by-reply"]
    assert ids_of(await search(client, "quasars")) == ["by-user"]
    assert ids_of(await search(client, "budget")) == ["by-title"]
    assert ids_of(await search(client, "nothing-like-this")) == []


async def test_a_streamed_reply_is_searchable(client: httpx.AsyncClient) -> None:
    result = await send_stream(client, {"message": "stream me", "session_id": "s"})
    assert result.names[-1] == "done"

    page = await search(client, "offline echo")

    assert ids_of(page) == ["s"]
    assert "offline echo" in (page["sessions"][0]["snippet"] or "")


# A search of "Deploying Kubernetes. The cluster is ready.", and whether it finds it.
PREFIX_CASES: list[tuple[str, bool]] = [
    ("kube dep", True),
    ("Deploying Kubernetes", True),
    ("KUBERNETES", True),
    ("kUbE", True),
    ("\uff2b\uff35\uff22\uff25", True),  # full-width
    ("  kube\t\ndep  ", True),
    ("kube, dep!", True),
    ("dep kube", True),
    ("k", True),
    ("kubernetes cluster", True),
    ("ernetes", False),  # inside a word
    ("kubernetesx", False),
    ("kube xylophone", False),  # one word missing
    ("deployed", False),  # no stemming
]


async def test_every_word_must_match_the_start_of_a_word_ignoring_case(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "s", ("user", "Deploying Kubernetes. The cluster is ready."))
    await store(database, "other", ("user", "Something else entirely"), at=1)

    for q, found in PREFIX_CASES:
        assert ids_of(await search(client, q)) == (["s"] if found else []), q


async def test_all_words_must_be_in_one_title_or_message(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Documents the current rule: each entry (the title, or one message) is matched on its
    own, so words spread over two messages of a session do not find it."""
    await store(database, "s", ("user", "kubernetes"), ("assistant", "deploying it"))

    assert ids_of(await search(client, "kubernetes")) == ["s"]
    assert ids_of(await search(client, "deploying")) == ["s"]
    assert ids_of(await search(client, "kubernetes deploying")) == []


# A text, a search, and whether the search finds the text: the same on both databases.
SCRIPT_CASES: list[tuple[str, str, bool]] = [
    ("Caf\u00e9 cr\u00e8me", "caf\u00e9", True),  # accented
    ("Caf\u00e9", "cafe", True),  # accent-folding
    ("cafe", "CAF\u00c9", True),  # accent-folding-in-query
    ("Die Stra\u00dfe", "strasse", True),  # sharp-s
    ("\u03c3\u03bf\u03c6\u03af\u03b1", "\u03a3\u039f\u03a6\u0399\u0391", True),  # greek-capitals
    ("\u6211\u4f4f\u5728\u6771\u4eac\u90fd", "\u6771\u4eac", True),  # chinese-inside
    ("\u6211\u4f4f\u5728\u6771\u4eac\u90fd", "\u6771\u90fd", False),  # chinese-not-adjacent
    ("\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22", "\u0e44\u0e17\u0e22", True),  # thai-inside
    ("cafe\u0301 time", "caf\u00e9", True),  # nfkc-in-text
    ("Caf\u00e9", "cafe\u0301", True),  # nfkc-in-query
    (
        "\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3",
        "\u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2",
        True,
    ),  # greek-final-sigma
    ("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u65e5\u672c", True),  # cjk-prefix
    (
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
        "\u30c6\u30ad\u30b9\u30c8",
        True,
    ),  # cjk-inside
    (
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
        "\u0939\u093f\u0928\u094d",
        True,
    ),  # devanagari-prefix
    (
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
        "\u0937\u093e",
        False,
    ),  # devanagari-not-inside
    (
        "\u0643\u064e\u062a\u064e\u0628\u064e",
        "\u062a\u064e\u0628\u064e",
        False,
    ),  # arabic-not-inside
    (
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
        "\u0e2a\u0e27\u0e31",
        True,
    ),  # thai-prefix
    ("\u0416\u0418\u0417\u041d\u042c", "\u0436\u0438\u0437", True),  # cyrillic-case
    ("\U0001f389 party time \U0001f389", "party", True),  # emoji-around
    ("\U0001f389 party", "\U0001f389", False),  # emoji-is-no-word
    ("example.com", "example com", True),  # dot-splits
    ("snake_case_name", "case name", True),  # underscore-splits
    ("x\u00b2 \u2460", "x2 1", True),  # compatibility-digits
]


async def test_words_match_the_same_way_on_both_databases(
    client: httpx.AsyncClient, database: Database
) -> None:
    for n, (text, _, _) in enumerate(SCRIPT_CASES):
        await store(database, f"s{n:02}", ("user", text), at=n)

    for n, (text, q, found) in enumerate(SCRIPT_CASES):
        assert (f"s{n:02}" in ids_of(await search(client, q))) is found, (text, q)


async def test_a_long_first_message_is_found_by_words_past_the_title(
    client: httpx.AsyncClient,
) -> None:
    text = "Please help me with " + "very " * 20 + "important stuff about zebras"
    await send(client, text, session_id="s")
    title = (await search(client, "zebras"))["sessions"][0]["title"]
    assert "zebras" not in title

    assert ids_of(await search(client, "zebras important")) == ["s"]


# --- Whose sessions -----------------------------------------------------------------------


async def test_each_user_finds_only_their_own_sessions(
    auth_client: httpx.AsyncClient, database: Database
) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(hs256_token("bob"))
    service = bearer(hs256_token("backend", role="service_role"))
    for user, headers in (("alice", alice), ("bob", bob)):
        for n in range(2):
            response = await auth_client.post(
                CHAT,
                json={"message": f"secret plans of {user}", "session_id": f"{user}-{n}"},
                headers=headers,
            )
            assert response.status_code == 200, response.text

    alices = await search(auth_client, "secret plans", alice)
    bobs = await search(auth_client, "secret plans", bob)
    for_alice = await search(auth_client, "secret plans", service, user_id="alice")
    everyone = await search(auth_client, "secret plans", service)
    bob_as_alice = await auth_client.get(
        SESSIONS, params={"q": "secret", "user_id": "bob"}, headers=alice
    )

    assert sorted(ids_of(alices)) == ["alice-0", "alice-1"]
    assert alices["total"] == 2
    assert sorted(ids_of(bobs)) == ["bob-0", "bob-1"]
    assert sorted(ids_of(for_alice)) == ["alice-0", "alice-1"]
    assert sorted(ids_of(everyone)) == ["alice-0", "alice-1", "bob-0", "bob-1"]
    assert everyone["total"] == 4
    assert bob_as_alice.status_code == 403, bob_as_alice.text
    # The other user's name is a word of their sessions, never a way into them.
    assert ids_of(await search(auth_client, "bob", alice)) == []
    assert (await auth_client.get(SESSIONS, params={"q": "secret"})).status_code == 401


async def test_open_mode_searches_everyone_or_the_named_user(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "a", ("user", "shared words"), user_id="alice")
    await store(database, "b", ("user", "shared words"), user_id="bob", at=1)
    await store(database, "n", ("user", "shared words"), at=2)

    assert ids_of(await search(client, "shared")) == ["n", "b", "a"]
    assert ids_of(await search(client, "shared", user_id="alice")) == ["a"]
    assert ids_of(await search(client, "shared", user_id="carol")) == []


# User ids that an FTS5 phrase must quote, or that have no word characters at all.
ODD_USER_IDS = [
    "Alice",
    'al"ice',
    "a b",
    "*",
    "NEAR(x",
    "user:1",
    "al-ice",
    "\u00e9l\u00e8ve",
    "---",
    "!!!",
]


async def test_user_ids_of_any_form_see_exactly_their_own_sessions(
    client: httpx.AsyncClient, database: Database
) -> None:
    """SQLite prefilters on the user id with an FTS5 phrase: ids with quotes, operators,
    spaces or no word characters at all must still select exactly that user's sessions."""
    owners = sorted(
        {"alice", "a", "b", *ODD_USER_IDS}
        | {user_id.lower() + "x" for user_id in ODD_USER_IDS}
        | {user_id + " b" for user_id in ODD_USER_IDS}
    )
    for n, owner in enumerate(owners):
        await store(database, f"s{n:02}", ("user", "common topic"), user_id=owner, at=n)

    for user_id in ODD_USER_IDS:
        mine = [f"s{n:02}" for n, owner in enumerate(owners) if owner == user_id]
        assert ids_of(await search(client, "common", user_id=user_id)) == mine, user_id


async def test_archived_sessions_are_found_only_with_archived_true(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "live", ("user", "quarterly report"))
    await store(database, "old", ("user", "quarterly report"), at=1)
    await patch(client, "old", {"archived": True})

    assert ids_of(await search(client, "quarterly")) == ["live"]
    assert ids_of(await search(client, "quarterly", archived="true")) == ["old"]

    await patch(client, "old", {"archived": False})
    assert ids_of(await search(client, "quarterly")) == ["old", "live"]


# --- Keeping the index exact --------------------------------------------------------------


async def test_a_rename_reindexes_the_title(client: httpx.AsyncClient, database: Database) -> None:
    await send(client, "Original wording here", session_id="s")
    await store(database, "keeps", ("user", "Unrelated"), ("assistant", "the original one"))

    await patch(client, "s", {"title": "Completely different"})

    assert ids_of(await search(client, "completely")) == ["s"]
    assert snippets_of(await search(client, "completely")) == {"s": None}
    # The first message still holds the old words, so they still find the session.
    assert "s" in ids_of(await search(client, "original wording"))

    await send(client, "Fresh", session_id="t")
    await patch(client, "t", {"title": "Renamed once"})
    await patch(client, "t", {"title": "Renamed twice"})
    assert ids_of(await search(client, "fresh")) == ["t"]
    assert ids_of(await search(client, "once")) == []
    assert ids_of(await search(client, "twice")) == ["t"]
    # One title entry per session, however often it is renamed.
    assert [seq for _, seq in await entries(database, ["t"])].count(SEARCH_TITLE_SEQ) == 1
    await assert_index_consistent(database)
    assert await index_rows_matching(database, "once") == []


async def test_a_rename_to_a_title_without_words_removes_the_title_entry(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "Hello", session_id="s")
    await patch(client, "s", {"title": "Ordinary"})

    await patch(client, "s", {"title": "\U0001f389\U0001f389 !!"})

    assert ids_of(await search(client, "ordinary")) == []
    assert await entries(database, ["s"]) == [("s", 1), ("s", 2)]
    await assert_index_consistent(database)


async def test_pinning_or_archiving_does_not_touch_the_index(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "Pinned topic", session_id="s")
    before = await entries(database)

    await patch(client, "s", {"pinned": True})
    await patch(client, "s", {"archived": True})
    await patch(client, "s", {"archived": False})

    assert await entries(database) == before
    assert ids_of(await search(client, "pinned topic")) == ["s"]


async def test_the_automatic_title_is_indexed_once(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "Automatic   title\nwords", session_id="s")
    await send(client, "Automatic title words", session_id="s")

    assert await entries(database) == [("s", 0), ("s", 1), ("s", 2), ("s", 3), ("s", 4)]
    page = await search(client, "automatic")
    assert ids_of(page) == ["s"]
    assert page["sessions"][0]["title"] == "Automatic title words"


async def test_an_automatic_title_set_by_a_later_message_is_indexed(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "legacy", ("system", "Prompt"), ("assistant", "Hello! Ask me."))
    await send(client, "Lighthouse keeping", session_id="legacy")

    page = await search(client, "lighthouse")

    assert page["sessions"][0]["title"] == "Lighthouse keeping"
    assert ("legacy", SEARCH_TITLE_SEQ) in await entries(database, ["legacy"])


async def test_deleting_a_session_removes_its_entries(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "Ephemeral xenolith notes", session_id="gone")
    await send(client, "Keeper notes", session_id="kept")
    assert ("gone", 0) in await entries(database)
    if database.engine.dialect.name == "sqlite":
        assert await index_rows_matching(database, "xenolith") != []

    response = await client.delete(session_url("gone"))

    assert response.status_code == 204, response.text
    assert await entries(database, ["gone"]) == []
    assert await entries(database) == [("kept", 0), ("kept", 1), ("kept", 2)]
    assert ids_of(await search(client, "xenolith")) == []
    assert ids_of(await search(client, "notes")) == ["kept"]
    await assert_index_consistent(database)
    assert await index_rows_matching(database, "xenolith") == []


async def test_deleting_all_of_a_users_sessions_removes_their_entries(
    client: httpx.AsyncClient, database: Database
) -> None:
    for n in range(3):
        await send(client, f"Alices quokka {n}", session_id=f"a{n}", user_id="alice")
    await send(client, "Bobs quokka", session_id="b", user_id="bob")
    await patch(client, "a1", {"archived": True})

    response = await client.delete(SESSIONS, params={"user_id": "alice"})

    assert response.status_code == 200, response.text
    assert await entries(database, ["a0", "a1", "a2"]) == []
    assert ids_of(await search(client, "quokka")) == ["b"]
    assert ids_of(await search(client, "alices")) == []
    assert ids_of(await search(client, "alices", archived="true")) == []
    await assert_index_consistent(database)
    assert await index_rows_matching(database, "alices") == []


async def test_a_failed_reply_adds_no_entry(
    client: httpx.AsyncClient, database: Database, live_server: LiveServer
) -> None:
    failing = ScriptedAssistant([], fail_with=AssistantError("down", kind="unavailable"))
    with use_assistant(live_server, failing):
        response = await client.post(CHAT, json={"message": "Will fail", "session_id": "s"})
    assert response.status_code == 502, response.text

    # Title and the user's message; the failed reply (message 2, no text) has none.
    assert await entries(database) == [("s", 0), ("s", 1)]
    assert ids_of(await search(client, "fail")) == ["s"]
    await assert_index_consistent(database)


async def test_messages_without_words_add_no_entry(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "s", ("user", "\U0001f389 !!! ..."), ("assistant", "?"))

    assert await entries(database) == []
    assert ids_of(await search(client, "\U0001f389")) == []


async def test_concurrent_writers_leave_one_entry_per_message_and_title(
    client: httpx.AsyncClient, database: Database
) -> None:
    to_one = [
        client.post(CHAT, json={"message": f"crowded session {n}", "session_id": "crowded"})
        for n in range(20)
    ]
    to_many = [
        client.post(CHAT, json={"message": f"lonely session {n}", "session_id": f"own-{n}"})
        for n in range(20)
    ]

    responses = await asyncio.gather(*to_one, *to_many)

    assert [r.status_code for r in responses] == [200] * 40
    crowded = await entries(database, ["crowded"])
    # The title, and each of the 40 messages (20 questions, 20 echoed replies) once.
    assert crowded == [("crowded", seq) for seq in range(41)]
    others = await entries(database, [f"own-{n}" for n in range(20)])
    assert others == sorted((f"own-{n}", seq) for n in range(20) for seq in range(3))
    assert len(await entries(database)) == 41 + 60
    assert ids_of(await search(client, "crowded")) == ["crowded"]
    assert (await search(client, "lonely"))["total"] == 20
    await assert_index_consistent(database)


async def test_concurrent_renames_leave_one_title_entry_the_final_title(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "Before the renames", session_id="s")

    responses = await asyncio.gather(
        *(
            client.patch(session_url("s"), json={"title": f"Rename{n:02d} title"})
            for n in range(12)
        ),
        *(client.post(CHAT, json={"message": "meanwhile", "session_id": "s"}) for _ in range(4)),
    )

    assert {r.status_code for r in responses} == {200}
    titles = [seq for _, seq in await entries(database, ["s"])].count(SEARCH_TITLE_SEQ)
    assert titles == 1
    final = (await client.get(session_url("s"))).json()["title"]
    word = final.split()[0].lower()
    assert ids_of(await search(client, word)) == ["s"]
    assert snippets_of(await search(client, word)) == {"s": None}
    stale = [f"rename{n:02d}" for n in range(12) if f"rename{n:02d}" != word]
    for old in stale:
        assert ids_of(await search(client, old)) == [], old
    await assert_index_consistent(database)


async def test_search_still_works_after_vacuum(
    client: httpx.AsyncClient, database: Database, backend: str
) -> None:
    """FTS5 refers to entries by chat_search's INTEGER PRIMARY KEY, which VACUUM keeps."""
    if backend != "sqlite":
        pytest.skip("VACUUM renumbering rowids is SQLite's")
    for n in range(12):
        await store(database, f"s{n:02}", ("user", f"topic{n % 3} item{n}"), at=n)
    for n in range(0, 12, 2):
        assert (await client.delete(session_url(f"s{n:02}"))).status_code == 204
    before = await entries(database)
    async with database.read() as conn:
        ids_before = sorted((await conn.execute(sa.select(chat_search.c.id))).scalars())

    path = database.engine.url.database
    assert path is not None
    await asyncio.to_thread(_vacuum, Path(path))

    async with database.read() as conn:
        assert sorted((await conn.execute(sa.select(chat_search.c.id))).scalars()) == ids_before
    assert await entries(database) == before
    await assert_index_consistent(database)
    assert ids_of(await search(client, "topic1")) == ["s07", "s01"]
    page = await search(client, "item11")
    assert ids_of(page) == ["s11"]
    assert snippets_of(page) == {"s11": "topic2 item11"}
    await send(client, "after the vacuum", session_id="s09")
    assert ids_of(await search(client, "vacuum")) == ["s09"]
    await assert_index_consistent(database)


def _vacuum(path: Path) -> None:
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("VACUUM")
    finally:
        connection.close()


# --- Ranking and snippets -----------------------------------------------------------------

# Many different words that start with "pay": a prefix query matches every one of them.
PAY_WORDS = (
    "pay paying payment payments paypal payroll payee payer payout payable payback "
    "payday payload paywall payslip"
)


@pytest.mark.parametrize("q", ["pay", "p", "payments"])
async def test_a_title_match_ranks_above_a_message_only_match(
    client: httpx.AsyncClient, database: Database, q: str
) -> None:
    # Titles of the same length, so that relevance ties and the newer comes first.
    await store(database, "by-title", ("user", "Payments overview today"), at=0)
    await store(database, "renamed", ("user", "hello"), at=1)
    await patch(client, "renamed", {"title": "Payments for renamed"})
    # Newer, and its reply is full of words that match better by any measure of relevance.
    await store(
        database,
        "by-message",
        ("user", "hello there"),
        ("assistant", f"{PAY_WORDS} {PAY_WORDS} payments payments"),
        at=10,
    )

    page = await search(client, q)

    assert ids_of(page) == ["renamed", "by-title", "by-message"]
    assert snippets_of(page)["renamed"] is None


async def test_equal_matches_come_newest_first_pinned_or_not(
    client: httpx.AsyncClient, database: Database
) -> None:
    for n in range(4):
        await store(database, f"s{n}", ("user", "Same words"), ("assistant", "Same reply"), at=n)
    await patch(client, "s1", {"pinned": True})

    assert ids_of(await search(client, "same")) == ["s3", "s2", "s1", "s0"]
    assert ids_of(await search(client, "reply")) == ["s3", "s2", "s1", "s0"]


async def test_the_snippet_is_an_excerpt_of_the_best_matching_message(
    client: httpx.AsyncClient, database: Database
) -> None:
    long_reply = "Background. " * 20 + "The ocelot sleeps all day. " + "More text. " * 20
    await store(
        database,
        "s",
        ("user", "Tell me about cats"),
        ("assistant", long_reply),
        ("user", "Thanks"),
    )

    page = await search(client, "ocelot")

    [item] = page["sessions"]
    assert item["snippet"] == make_snippet(long_reply, ["ocelot"])
    assert item["snippet"].startswith("...")
    assert "The ocelot sleeps all day." in item["snippet"]
    assert len(item["snippet"]) <= 160


async def test_the_snippet_shows_a_folded_or_unspaced_match_far_into_a_message(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Centred where the index matched, in the text as written: `strasse` on `Straße`, and
    `東京` in the middle of a run of Chinese, each after 20,000 characters."""
    folded = "Background, " * 1_700 + "the Stra\u00dfe is closed. " + "More text. " * 20
    unspaced = (
        "\u6211\u4f4f\u5728\u5317\u4eac\u3002" * 3_400
        + "\u6211\u4f4f\u5728\u6771\u4eac\u90fd\u3002" * 2
    )
    await store(database, "folded", ("user", "Directions"), ("assistant", folded))
    await store(database, "unspaced", ("user", "Where"), ("assistant", unspaced))

    by_folding = snippets_of(await search(client, "STRASSE"))
    by_pairs = snippets_of(await search(client, "\u6771\u4eac"))

    assert set(by_folding) == {"folded"}
    assert by_folding["folded"] is not None
    assert by_folding["folded"].startswith("...")
    assert "the Stra\u00dfe is closed." in by_folding["folded"]
    assert set(by_pairs) == {"unspaced"}
    assert by_pairs["unspaced"] is not None
    assert by_pairs["unspaced"].startswith("...")
    assert "\u6211\u4f4f\u5728\u6771\u4eac\u90fd" in by_pairs["unspaced"]


async def test_the_snippet_comes_from_the_message_with_every_word(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(
        database,
        "s",
        ("user", "about llamas"),
        ("assistant", "llamas and alpacas are related"),
        ("user", "what about alpacas alone"),
    )

    page = await search(client, "llama alpaca")

    assert snippets_of(page) == {"s": "llamas and alpacas are related"}


async def test_of_equally_good_messages_the_newest_gives_the_snippet(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "s", ("user", "hello"), ("assistant", "deploy early"))
    await store(database, "s", ("user", "deploy later"))

    assert snippets_of(await search(client, "deploy")) == {"s": "deploy later"}


async def test_snippets_are_null_outside_search_and_for_title_only_matches(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "s", ("user", "first question"))
    await patch(client, "s", {"title": "Marmalade recipes"})

    listed = await search(client, "")
    found = await search(client, "marmalade")
    by_message = await search(client, "question")

    assert snippets_of(listed) == {"s": None}
    assert snippets_of(found) == {"s": None}
    assert snippets_of(by_message) == {"s": "first question"}


# --- Paging -------------------------------------------------------------------------------


async def seed_matches(database: Database, count: int) -> list[str]:
    """`count` sessions that match "needle" (the newest first in the returned order) among
    others that do not."""
    for n in range(count):
        await store(database, f"m{n:02}", ("user", f"needle number {n}"), at=2 * n)
        await store(database, f"x{n:02}", ("user", f"haystack number {n}"), at=2 * n + 1)
    return [f"m{n:02}" for n in reversed(range(count))]


@pytest.mark.parametrize(("count", "limit"), [(0, 3), (1, 3), (3, 3), (7, 3), (7, 1), (7, 100)])
async def test_cursor_mode_pages_through_every_result_once(
    client: httpx.AsyncClient, database: Database, count: int, limit: int
) -> None:
    expected = await seed_matches(database, count)

    pages = await scroll(client, "needle", limit=limit)

    shown = [session_id for page in pages for session_id in ids_of(page)]
    assert shown == expected
    assert all(len(ids_of(page)) <= limit for page in pages)
    for page in pages:
        assert page["page"] is None
        assert page["total_pages"] is None
        assert page["total"] == count
        assert page["page_size"] == limit


async def test_cursor_mode_without_the_total(client: httpx.AsyncClient, database: Database) -> None:
    expected = await seed_matches(database, 5)

    pages = await scroll(client, "needle", limit=2, include_total="false")

    assert [s for page in pages for s in ids_of(page)] == expected
    assert {page["total"] for page in pages} == {None}


async def test_page_mode_gives_the_total_and_the_pages(
    client: httpx.AsyncClient, database: Database
) -> None:
    expected = await seed_matches(database, 7)

    pages = [await search(client, "needle", page=n, page_size=3) for n in (1, 2, 3, 4)]

    assert [ids_of(page) for page in pages] == [expected[0:3], expected[3:6], expected[6:], []]
    for n, page in enumerate(pages, start=1):
        assert page["total"] == 7
        assert page["total_pages"] == 3
        assert page["page"] == n
        assert page["page_size"] == 3
    assert [page["has_more"] for page in pages] == [True, True, False, False]
    # Page mode's next_cursor continues in cursor mode.
    cursor = pages[0]["next_cursor"]
    assert isinstance(cursor, str)
    assert ids_of(await search(client, "needle", limit=3, cursor=cursor)) == expected[3:6]
    without_total = await search(client, "needle", page=1, page_size=3, include_total="false")
    assert without_total["total"] is None
    assert without_total["total_pages"] is None
    assert ids_of(without_total) == expected[0:3]


async def test_a_page_far_past_the_end_is_empty(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_matches(database, 2)

    page = await search(client, "needle", page=10_000_000, page_size=100)

    assert page["sessions"] == []
    assert page["total"] == 2


async def test_a_search_cursor_is_valid_for_equivalent_queries(
    client: httpx.AsyncClient, database: Database
) -> None:
    expected = await seed_matches(database, 4)
    first = await search(client, "Needle!", limit=2)

    second = await search(client, "  needle ", limit=2, cursor=first["next_cursor"])

    assert ids_of(first) + ids_of(second) == expected


# --- Cursors that belong to something else ------------------------------------------------


async def _cursors(client: httpx.AsyncClient, database: Database) -> dict[str, str]:
    await seed_matches(database, 4)
    await store(database, "alices", ("user", "needle of alice"), user_id="alice", at=100)
    await store(database, "alices2", ("user", "needle of alice"), user_id="alice", at=101)
    listing = (await client.get(SESSIONS, params={"limit": 1})).json()["next_cursor"]
    searching = (await search(client, "needle", limit=1))["next_cursor"]
    alices = (await search(client, "needle", limit=1, user_id="alice"))["next_cursor"]
    assert isinstance(listing, str)
    assert isinstance(searching, str)
    assert isinstance(alices, str)
    return {"listing": listing, "search": searching, "alices": alices}


# A cursor, and parameters it does not belong to.
FOREIGN_CURSORS: list[tuple[str, Params]] = [
    ("listing", {"q": "needle"}),
    ("search", {}),
    ("search", {"q": ""}),
    ("search", {"q": "   "}),
    ("search", {"q": "haystack"}),
    ("search", {"q": "needle number"}),
    ("search", {"q": "!!!"}),
    ("search", {"q": "needle", "archived": "true"}),
    ("search", {"q": "needle", "user_id": "alice"}),
    ("alices", {"q": "needle"}),
    ("alices", {"q": "needle", "user_id": "bob"}),
]


async def test_a_cursor_from_another_listing_or_search_is_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    cursors = await _cursors(client, database)

    for cursor, params in FOREIGN_CURSORS:
        response = await client.get(
            SESSIONS, params={**params, "cursor": cursors[cursor], "limit": 2}
        )
        error = assert_validation_error(response, ["query", "cursor"])
        assert error["input"] == cursors[cursor], (cursor, params)


async def test_another_users_search_cursor_is_422(auth_client: httpx.AsyncClient) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(hs256_token("bob"))
    for user, headers in (("alice", alice), ("bob", bob)):
        for n in range(3):
            response = await auth_client.post(
                CHAT, json={"message": "needle", "session_id": f"{user}-{n}"}, headers=headers
            )
            assert response.status_code == 200, response.text
    alices = (await search(auth_client, "needle", alice, limit=1))["next_cursor"]

    response = await auth_client.get(
        SESSIONS, params={"q": "needle", "limit": 1, "cursor": alices}, headers=bob
    )

    assert_validation_error(response, ["query", "cursor"])


TAMPERED: list[Json] = [
    {"o": 0},
    {"o": -3},
    {"o": 10_001},
    {"o": 10**30},
    {"o": 2.0},
    {"o": True},
    {"o": "2"},
    {"o": None},
    {"f": 7},
    {"f": None},
    {"f": "0" * 16},
    {"v": 2},
]


async def test_a_tampered_search_cursor_is_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_matches(database, 4)
    real = (await search(client, "needle", limit=1))["next_cursor"]
    assert isinstance(real, str)

    for change in TAMPERED:
        tampered = b64({**decode(real), **change})
        response = await client.get(SESSIONS, params={"q": "needle", "cursor": tampered})
        assert_validation_error(response, ["query", "cursor"])


async def test_a_search_cursor_without_its_fingerprint_is_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_matches(database, 4)
    real = decode((await search(client, "needle", limit=1))["next_cursor"])
    del real["f"]

    response = await client.get(SESSIONS, params={"q": "needle", "cursor": b64(real)})

    assert_validation_error(response, ["query", "cursor"])


# --- What q may be ------------------------------------------------------------------------


@pytest.mark.parametrize("q", ["", " ", "\t\n  "])
async def test_an_empty_q_lists_as_usual(
    client: httpx.AsyncClient, database: Database, q: str
) -> None:
    await store(database, "a", ("user", "first"))
    await store(database, "b", ("user", "second"), at=1)
    await patch(client, "a", {"pinned": True})

    page = await search(client, q)

    assert ids_of(page) == ["a", "b"]
    assert page["total"] == 2
    assert snippets_of(page) == {"a": None, "b": None}


async def test_a_q_without_words_finds_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "s", ("user", "!!! ... - * ( ) : ^ \U0001f600\U0001f389"))

    for q in ["!!!", "...", "\U0001f600\U0001f389", "- * ( ) : ^", "\u200b"]:
        page = await search(client, q)
        by_cursor = await search(client, q, limit=5)

        assert page["sessions"] == []
        assert page["total"] == 0
        assert page["total_pages"] == 0
        assert page["has_more"] is False
        assert by_cursor["sessions"] == []
        assert by_cursor["next_cursor"] is None


async def test_q_of_200_characters_is_served_and_201_is_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store(database, "s", ("user", "x" * 60))

    assert ids_of(await search(client, "x" * 200)) == ["s"]
    assert ids_of(await search(client, "x " * 100)) == ["s"]
    response = await client.get(SESSIONS, params={"q": "x" * 201})
    assert_validation_error(response, ["query", "q"])


@pytest.mark.parametrize("q", ["\x00", "a\x00b", "needle\x00"])
async def test_q_with_nul_is_422(client: httpx.AsyncClient, q: str) -> None:
    response = await client.get(SESSIONS, params={"q": q})

    assert_validation_error(response, ["query", "q"])


async def test_q_with_invalid_utf8_is_not_a_server_error(client: httpx.AsyncClient) -> None:
    for raw in ("%ED%A0%80", "%FF%FE", "%C0%80", "a%80b"):
        response = await client.get(f"{SESSIONS}?q={raw}")
        assert response.status_code in (200, 422), (raw, response.text)


async def test_hostile_queries_are_answered_not_500(
    client: httpx.AsyncClient, database: Database
) -> None:
    stored = "deploy kube AND OR NOT NEAR document user_id"
    await store(database, "s", ("user", stored))
    await store(database, "t", ("user", "other"), user_id='al"ice*', at=1)

    for q in HOSTILE_QUERIES:
        for params in ({}, {"user_id": 'al"ice*'}):
            page = await search(client, q, None, **params)
            if params.get("user_id"):
                assert set(ids_of(page)) <= {"t"}, q
                continue
            wanted = query_words(q)
            expected = bool(wanted) and all(
                any(word.startswith(qw) for word in words(stored)) for qw in wanted
            )
            assert ids_of(page) == (["s"] if expected else []), q


# Words of the stored sessions, their prefixes, and words found nowhere.
_STORED = {
    "u1": ["Deploying Kubernetes today", "The cluster is ready now"],
    "u2": ["Kubernetes cluster upgrade", "Upgrade done"],
    "u3": ["Quarterly budget review", "Budget approved"],
}
_USERS = {"u1": "alice", "u2": 'al"ice', "u3": "alice"}


def _model(q: str, user_id: str | None) -> set[str]:
    """The sessions a search must return, computed here: every query word a prefix of a word
    of one title or message."""
    wanted = query_words(q)
    if not wanted:
        return set()
    found = set()
    for session_id, texts in _STORED.items():
        if user_id is not None and _USERS[session_id] != user_id:
            continue
        for text in [make_title(texts[0]), *texts]:
            if all(any(w.startswith(qw) for w in words(text)) for qw in wanted):
                found.add(session_id)
    return found


_VOCABULARY = sorted(
    {w[:end] for texts in _STORED.values() for t in texts for w in words(t) for end in (1, 3, 99)}
    | {"xylophone", "AND", "OR", "NOT", "NEAR", "*", '"', "'", ":", "(", ")", "^", "-"}
)


async def test_any_query_text_gives_exactly_the_matching_sessions(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Every user's search and the search of all users (`user_id` None), against a model."""
    for n, (session_id, (question, answer)) in enumerate(_STORED.items()):
        await store(
            database,
            session_id,
            ("user", question),
            ("assistant", answer),
            user_id=_USERS[session_id],
            at=n,
        )
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        q=st.lists(st.one_of(st.sampled_from(_VOCABULARY), st.text(max_size=8)), max_size=4).map(
            " ".join
        ),
        user_id=st.sampled_from([None, "alice", 'al"ice', "nobody"]),
    )
    def check(q: str, user_id: str | None) -> None:
        params = {"q": q} if user_id is None else {"q": q, "user_id": user_id}
        response = asyncio.run_coroutine_threadsafe(
            client.get(SESSIONS, params=params), loop
        ).result()
        if "\x00" in q or len(q) > 200:
            assert response.status_code == 422, response.text
            return
        assert response.status_code == 200, response.text
        if not q.strip():
            return
        found = {item["session_id"] for item in response.json()["sessions"]}
        assert found == _model(q, user_id), q

    await asyncio.to_thread(check)


async def test_results_stop_at_the_search_depth_limit(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search pages up to SEARCH_MAX_OFFSET results and no further, in both modes."""
    monkeypatch.setattr(search_service, "SEARCH_MAX_OFFSET", 3)
    for n in range(5):
        await send(client, f"Depth limit {n}", session_id=f"d{n}")

    first = await search(client, "depth", limit=2)
    assert len(first["sessions"]) == 2
    assert first["has_more"]
    second = await search(client, "depth", limit=2, cursor=first["next_cursor"])
    assert len(second["sessions"]) == 1
    assert (second["has_more"], second["next_cursor"]) == (False, None)
    beyond = await search(client, "depth", page=3, page_size=2)
    assert (beyond["sessions"], beyond["total"]) == ([], 5)
