"""Read-only share links over HTTP (issue 14): a snapshot of the current branch under an
unguessable id, read without signing in, listed and revoked by its owner only, gone with its
session, expired after its days, turned off by SHARING_ENABLED, rate limited per address."""

import asyncio
import re
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from app.config import Settings
from app.kit.db.engine import Database
from app.kit.db.tables import chat_messages, chat_share_messages, chat_shares
from app.kit.db.types import utc_now
from app.main import create_app
from app.messages import queries as message_queries
from tests.api.conftest import Jwks, bearer
from tests.api.helpers import CHAT, SESSIONS, Json, get_session, parse_utc, send, session_url
from tests.conftest import LiveServer, make_settings, serve
from tests.services.helpers import make_current
from tests.tokens import ISSUER, JWT_SECRET, hs256_token

SHARES = "/api/v1/chat/shares"
SHARED = "/api/v1/shared"
CREATED_KEYS = {"share_id", "url", "created_at", "expires_at"}
LISTED_KEYS = CREATED_KEYS | {"session_id", "title"}
NOT_FOUND = {"detail": "Share link not found"}
SHARE_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")


def shares_of(session_id: str) -> str:
    return f"{session_url(session_id)}/shares"


async def share(
    client: httpx.AsyncClient,
    session_id: str,
    body: Json | None = None,
    headers: dict[str, str] | None = None,
) -> Json:
    """POST a share of the session, asserting a 201 of the documented shape; the body."""
    response = await client.post(shares_of(session_id), json=body, headers=headers or {})
    assert response.status_code == 201, response.text
    data: Json = response.json()
    assert set(data) == CREATED_KEYS
    assert SHARE_ID.match(data["share_id"]), data
    assert data["url"] == f"/s/{data['share_id']}"
    parse_utc(data["created_at"])
    return data


async def read(client: httpx.AsyncClient, share_id: str) -> httpx.Response:
    return await client.get(f"{SHARED}/{share_id}")


async def shared(client: httpx.AsyncClient, share_id: str) -> Json:
    response = await read(client, share_id)
    assert response.status_code == 200, response.text
    assert response.headers["x-robots-tag"] == "noindex"
    assert response.headers["cache-control"] == "no-store"
    data: Json = response.json()
    assert set(data) == {"title", "messages", "created_at"}
    for message in data["messages"]:
        assert set(message) == {"role", "content", "created_at"}
    return data


async def assert_gone(client: httpx.AsyncClient, share_id: str) -> None:
    """Answered as a link that never existed."""
    response = await read(client, share_id)
    never = await read(client, "never-existed-never-existed-0000")
    assert response.status_code == never.status_code == 404, response.text
    assert response.json() == never.json() == NOT_FOUND
    assert response.headers["content-type"] == never.headers["content-type"]


async def share_rows(database: Database) -> tuple[int, int]:
    """(links, snapshot messages) stored."""
    async with database.read() as conn:
        links = (await conn.execute(select(func.count()).select_from(chat_shares))).scalar_one()
        messages = (
            await conn.execute(select(func.count()).select_from(chat_share_messages))
        ).scalar_one()
    return int(links), int(messages)


# --- Creating and reading -----------------------------------------------------------------


async def test_a_link_shows_the_current_branch_as_it_was_when_shared(
    client: httpx.AsyncClient,
) -> None:
    first = await send(client, "one", session_id="s")
    await send(client, "two", session_id="s")
    before = await get_session(client, "s")

    created = await share(client, "s")
    await send(client, "three, after sharing", session_id="s")
    await client.patch(session_url("s"), json={"title": "Renamed later"})

    data = await shared(client, created["share_id"])
    assert data["title"] == before["title"] == "one"
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        (m["role"], m["content"]) for m in before["messages"]
    ]
    assert [m["created_at"] for m in data["messages"]] == [
        m["created_at"] for m in before["messages"]
    ]
    assert data["created_at"] == created["created_at"]
    assert created["expires_at"] is None
    # No id of the session or of its messages anywhere in it.
    ids = {"s", first["user_message_id"], first["message_id"]}
    ids |= {m["id"] for m in before["messages"]}
    text = (await read(client, created["share_id"])).text
    assert not any(f'"{identifier}"' in text for identifier in ids)
    assert created["share_id"] not in ids


async def test_a_link_holds_only_the_current_branch(client: httpx.AsyncClient) -> None:
    await send(client, "one", session_id="s")
    two = await send(client, "two", session_id="s")
    edited = await client.post(
        CHAT,
        json={"message": "two, edited", "session_id": "s", "edit_of": two["user_message_id"]},
    )
    assert edited.status_code == 200, edited.text

    data = await shared(client, (await share(client, "s"))["share_id"])

    contents = [m["content"] for m in data["messages"]]
    assert [c for c in contents if not c.startswith("You said")] == ["one", "two, edited"]
    assert len(contents) == 4
    assert all('"two"' not in c for c in contents)


async def test_a_link_made_while_the_branch_is_switched_holds_one_whole_branch(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary and the branch are read under the session's lock: a switch waits for the
    share. Without it (PostgreSQL) a switch committed between the two reads froze a branch
    that never was: the new branch's first messages, as many as the old one had."""
    await send(client, "one", session_id="s")
    two = await send(client, "two", session_id="s")
    await send(client, "three", session_id="s")
    edited = await client.post(
        CHAT,
        json={"message": "two, edited", "session_id": "s", "edit_of": two["user_message_id"]},
    )
    assert edited.status_code == 200, edited.text
    before = await get_session(client, "s")
    read_branch = message_queries.list_messages
    switching: list[asyncio.Task[None]] = []

    async def switched_meanwhile(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        # Once, between the read of the summary and the read of its branch.
        monkeypatch.setattr(message_queries, "list_messages", read_branch)
        switching.append(
            asyncio.create_task(make_current(database, "s", uuid.UUID(two["user_message_id"])))
        )
        await ended_or_waiting_for_a_lock(database, switching[0])
        return await read_branch(*args, **kwargs)

    monkeypatch.setattr(message_queries, "list_messages", switched_meanwhile)
    data = await shared(client, (await share(client, "s"))["share_id"])
    await switching[0]

    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        (m["role"], m["content"]) for m in before["messages"]
    ]
    assert (await get_session(client, "s"))["message_count"] == 6


async def ended_or_waiting_for_a_lock(database: Database, task: asyncio.Task[None]) -> None:
    """Until `task` has ended or, on PostgreSQL, a transaction of the database waits for a
    lock (on SQLite a writer waits for the database's lock, which no query shows)."""
    if database.engine.dialect.name != "postgresql":
        return
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    while not task.done():
        async with database.read() as conn:
            if (await conn.execute(waiting)).scalar_one():
                return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("content", "metadata", "kept"),
    [
        ("", {"status": "failed"}, False),
        ("Half a rep", {"status": "generating"}, False),
        ("Half a reply, then stopped", {"status": "incomplete", "finish_reason": "stopped"}, True),
    ],
    ids=["failed-without-text", "still-generating", "stopped-with-text"],
)
async def test_only_finished_replies_with_text_are_copied(
    client: httpx.AsyncClient,
    database: Database,
    content: str,
    metadata: dict[str, str],
    kept: bool,
) -> None:
    await send(client, "one", session_id="s")
    detail = await get_session(client, "s")
    reply_id = uuid.UUID(detail["messages"][1]["id"])
    async with database.write() as conn:
        await conn.execute(
            update(chat_messages)
            .where(chat_messages.c.id == reply_id)
            .values(content=content, metadata=metadata)
        )

    data = await shared(client, (await share(client, "s"))["share_id"])

    expected = ["one", content] if kept else ["one"]
    assert [m["content"] for m in data["messages"]] == expected


async def test_expiry_in_days(client: httpx.AsyncClient, database: Database) -> None:
    await send(client, "one", session_id="s")

    created = await share(client, "s", {"expires_in_days": 7})
    lasting = await share(client, "s", {"expires_in_days": None})
    whole = await share(client, "s", {"expires_in_days": 7.0})
    empty_body = await share(client, "s", {})

    expires = parse_utc(created["expires_at"]) - parse_utc(created["created_at"])
    assert expires == timedelta(days=7)
    assert parse_utc(whole["expires_at"]) - parse_utc(whole["created_at"]) == timedelta(days=7)
    assert lasting["expires_at"] is None
    assert empty_body["expires_at"] is None
    await shared(client, created["share_id"])

    # A week later (the stored expiry moved into the past rather than waiting for it).
    async with database.write() as conn:
        await conn.execute(
            update(chat_shares)
            .where(chat_shares.c.share_id == created["share_id"])
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )
    await assert_gone(client, created["share_id"])
    listed = await client.get(SHARES)
    assert {s["share_id"] for s in listed.json()["shares"]} == {
        whole["share_id"],
        lasting["share_id"],
        empty_body["share_id"],
    }
    revoked = await client.delete(f"{SHARES}/{created['share_id']}")
    assert revoked.status_code == 404, revoked.text
    assert revoked.json() == NOT_FOUND
    # The next link of the session clears the expired ones out.
    await share(client, "s")
    async with database.read() as conn:
        kept = await conn.execute(
            select(chat_shares.c.share_id).where(chat_shares.c.share_id == created["share_id"])
        )
        assert kept.first() is None


@pytest.mark.parametrize(
    "body",
    [
        {"expires_in_days": 0},
        {"expires_in_days": 366},
        {"expires_in_days": -1},
        {"expires_in_days": "7"},
        {"expires_in_days": 1.5},
        {"expires_in_days": True},
        [],
    ],
)
async def test_invalid_expiry_is_a_422_and_creates_nothing(
    client: httpx.AsyncClient, database: Database, body: Any
) -> None:
    await send(client, "one", session_id="s")

    response = await client.post(shares_of("s"), json=body)

    assert response.status_code == 422, response.text
    assert await share_rows(database) == (0, 0)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{SHARED}/not%20a%20link"),
        ("DELETE", f"{SHARES}/{'x' * 129}"),
        ("GET", f"{SHARES}?session_id=not%20a%20session"),
        ("GET", f"{SHARES}?limit=0"),
        ("POST", "/api/v1/chat/sessions/not%20a%20session/shares"),
    ],
)
async def test_malformed_ids_are_422(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path)

    assert response.status_code == 422, response.text


async def test_an_unreadable_body_is_a_400(client: httpx.AsyncClient, database: Database) -> None:
    await send(client, "one", session_id="s")

    response = await client.post(
        shares_of("s"), content=b"k\xff", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert await share_rows(database) == (0, 0)


async def test_sharing_a_missing_session_is_a_404(
    client: httpx.AsyncClient, database: Database
) -> None:
    response = await client.post(shares_of("nobody"))

    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Session not found"}
    assert await share_rows(database) == (0, 0)


async def test_share_ids_are_random_and_unrelated_to_the_session(
    client: httpx.AsyncClient,
) -> None:
    await send(client, "one", session_id="s")

    ids = [(await share(client, "s"))["share_id"] for _ in range(20)]

    assert len(set(ids)) == len(ids)
    for share_id in ids:
        # 32 URL-safe base64 characters: 192 random bits (at least 128 required).
        assert len(share_id) * 6 >= 128
        assert share_id != "s"
    # Every position takes many values across links, as random characters do.
    characters = Counter(c for share_id in ids for c in share_id)
    assert len(characters) > 32


async def test_public_base_url_makes_absolute_links(settings: Settings, database: Database) -> None:
    app = create_app(
        make_settings(settings.database_url, public_base_url="https://chat.example.com/")
    )
    async with serve(app) as live:
        await send(live.client, "one", session_id="s")
        response = await live.client.post(shares_of("s"))
        listed = await live.client.get(SHARES)

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["url"] == f"https://chat.example.com/s/{created['share_id']}"
    assert [s["url"] for s in listed.json()["shares"]] == [created["url"]]


# --- Listing and revoking -----------------------------------------------------------------


async def test_list_newest_first_and_filtered_by_session(client: httpx.AsyncClient) -> None:
    await send(client, "one", session_id="s")
    await send(client, "other", session_id="t")
    first = await share(client, "s", {"expires_in_days": 30})
    second = await share(client, "t")
    third = await share(client, "s")

    listed = await client.get(SHARES)
    of_s = await client.get(SHARES, params={"session_id": "s"})
    limited = await client.get(SHARES, params={"limit": 1})

    assert listed.status_code == 200, listed.text
    shares = listed.json()["shares"]
    assert [s["share_id"] for s in shares] == [
        third["share_id"],
        second["share_id"],
        first["share_id"],
    ]
    for item in shares:
        assert set(item) == LISTED_KEYS
    assert shares[2] == {**first, "session_id": "s", "title": "one"}
    assert [s["share_id"] for s in of_s.json()["shares"]] == [
        third["share_id"],
        first["share_id"],
    ]
    assert [s["share_id"] for s in limited.json()["shares"]] == [third["share_id"]]


async def test_revoke_makes_the_link_a_404(client: httpx.AsyncClient, database: Database) -> None:
    await send(client, "one", session_id="s")
    created = await share(client, "s")
    kept = await share(client, "s")

    response = await client.delete(f"{SHARES}/{created['share_id']}")

    assert response.status_code == 204, response.text
    assert response.content == b""
    await assert_gone(client, created["share_id"])
    await shared(client, kept["share_id"])
    again = await client.delete(f"{SHARES}/{created['share_id']}")
    assert again.status_code == 404
    assert again.json() == NOT_FOUND
    assert (await share_rows(database))[0] == 1


async def test_deleting_the_session_revokes_its_links(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "one", session_id="s")
    await send(client, "other", session_id="t")
    gone = await share(client, "s")
    kept = await share(client, "t")

    response = await client.delete(session_url("s"))

    assert response.status_code == 204, response.text
    await assert_gone(client, gone["share_id"])
    await shared(client, kept["share_id"])
    # The snapshot's messages went with the link (foreign keys on both databases).
    assert await share_rows(database) == (1, 2)


async def test_deleting_all_sessions_revokes_their_links(
    client: httpx.AsyncClient, database: Database
) -> None:
    await send(client, "one", session_id="s", user_id="alice")
    await send(client, "two", session_id="t", user_id="alice")
    await send(client, "bob's", session_id="u", user_id="bob")
    links = [(await share(client, sid))["share_id"] for sid in ("s", "t", "u")]

    response = await client.delete(SESSIONS, params={"user_id": "alice"})

    assert response.status_code == 200, response.text
    for share_id in links[:2]:
        await assert_gone(client, share_id)
    await shared(client, links[2])
    assert await share_rows(database) == (1, 2)


async def test_sharing_while_the_session_is_deleted_is_a_404_or_a_dead_link(
    client: httpx.AsyncClient, database: Database
) -> None:
    for attempt in range(5):
        session_id = f"s{attempt}"
        await send(client, "doomed", session_id=session_id)

        responses = await asyncio.gather(
            client.post(shares_of(session_id)),
            client.delete(session_url(session_id)),
            client.post(shares_of(session_id)),
        )

        # Each share came before the deletion (and went with it) or after it: never a 500.
        assert {r.status_code for r in responses} <= {201, 204, 404}, [r.text for r in responses]
        assert responses[1].status_code == 204
        for response in responses:
            if response.status_code == 201:
                await assert_gone(client, response.json()["share_id"])
    assert await share_rows(database) == (0, 0)


# --- Who may do what (authentication on) --------------------------------------------------


async def test_links_are_read_without_signing_in_but_managed_only_by_their_owner(
    auth_client: httpx.AsyncClient, jwks: Jwks
) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(hs256_token("bob"))
    service = bearer(jwks.rs256.token("backend", role="service_role"))
    sent = await auth_client.post(CHAT, json={"message": "alice's"}, headers=alice)
    session_id = sent.json()["session_id"]
    bobs_try = await auth_client.post(shares_of(session_id), headers=bob)
    assert bobs_try.status_code == 404, bobs_try.text
    anonymous_try = await auth_client.post(shares_of(session_id))
    assert anonymous_try.status_code == 401, anonymous_try.text
    created = await share(auth_client, session_id, headers=alice)
    by_service = await share(auth_client, session_id, headers=service)

    # Anyone reads it, with or without a token (even a refused one).
    for headers in ({}, bob, bearer("not-a-token")):
        response = await auth_client.get(f"{SHARED}/{created['share_id']}", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["messages"][0]["content"] == "alice's"

    as_alice = await auth_client.get(SHARES, headers=alice)
    as_bob = await auth_client.get(SHARES, headers=bob)
    bob_names_alice = await auth_client.get(SHARES, params={"user_id": "alice"}, headers=bob)
    as_service = await auth_client.get(SHARES, params={"user_id": "alice"}, headers=service)
    anonymous = await auth_client.get(SHARES)
    # The service caller's link is alice's: it acted for the session's owner.
    mine = {created["share_id"], by_service["share_id"]}
    assert {s["share_id"] for s in as_alice.json()["shares"]} == mine
    assert as_bob.json() == {"shares": []}
    assert bob_names_alice.status_code == 403
    assert {s["share_id"] for s in as_service.json()["shares"]} == mine
    assert anonymous.status_code == 401

    bob_revokes = await auth_client.delete(f"{SHARES}/{created['share_id']}", headers=bob)
    assert bob_revokes.status_code == 404, bob_revokes.text
    assert bob_revokes.json() == NOT_FOUND
    anonymous_revokes = await auth_client.delete(f"{SHARES}/{created['share_id']}")
    assert anonymous_revokes.status_code == 401
    await shared(auth_client, created["share_id"])

    alice_revokes = await auth_client.delete(f"{SHARES}/{created['share_id']}", headers=alice)
    assert alice_revokes.status_code == 204
    await assert_gone(auth_client, created["share_id"])
    service_revokes = await auth_client.delete(
        f"{SHARES}/{by_service['share_id']}", headers=service
    )
    assert service_revokes.status_code == 204
    await assert_gone(auth_client, by_service["share_id"])


# --- Settings -----------------------------------------------------------------------------


async def test_sharing_disabled_answers_404_everywhere(
    settings: Settings, live_server: LiveServer, database: Database
) -> None:
    # A link made while sharing was on...
    await send(live_server.client, "one", session_id="s")
    created = await share(live_server.client, "s")

    app = create_app(make_settings(settings.database_url, sharing_enabled=False))
    async with serve(app) as live:
        responses = [
            await live.client.post(shares_of("s"), json={"expires_in_days": 1}),
            await live.client.get(SHARES),
            await live.client.delete(f"{SHARES}/{created['share_id']}"),
            await live.client.get(f"{SHARED}/{created['share_id']}"),
            await live.client.get(f"/s/{created['share_id']}"),
        ]
        spec = (await live.client.get("/openapi.json")).json()

    for response in responses:
        assert response.status_code == 404, (response.request.url, response.text)
        assert response.json() == {"detail": "Not Found"}
    assert not [path for path in spec["paths"] if "share" in path]
    # ...is still there for when sharing is turned back on.
    assert await share_rows(database) == (1, 2)


async def test_shared_reads_are_rate_limited_per_address(
    settings: Settings, database: Database
) -> None:
    app = create_app(
        make_settings(
            settings.database_url,
            auth_jwt_secret=JWT_SECRET,
            auth_issuer=ISSUER,
            rate_limit_messages="100/minute",
            shared_rate_limit="3/minute",
        )
    )
    async with serve(app) as live:
        alice = bearer(hs256_token("alice"))
        sent = await live.client.post(CHAT, json={"message": "one"}, headers=alice)
        session_id = sent.json()["session_id"]
        created = await share(live.client, session_id, headers=alice)
        # Unknown links count too: guessing costs the same as reading.
        statuses = [
            (await read(live.client, share_id)).status_code
            for share_id in [created["share_id"], "unknown-link", created["share_id"]]
        ]
        refused = await read(live.client, created["share_id"])
        # Sending messages has its own limit, untouched by the reads.
        still_sends = await live.client.post(
            CHAT, json={"message": "two", "session_id": session_id}, headers=alice
        )

    assert statuses == [200, 404, 200]
    assert refused.status_code == 429, refused.text
    assert refused.json() == {"detail": "Too many requests; try again later"}
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert still_sends.status_code == 200, still_sends.text


def test_invalid_shared_rate_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        make_settings("sqlite:///unused.db", shared_rate_limit="often")
