"""Rate limits on sending messages and the request body size limit, over HTTP."""

import asyncio
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.kit.db.engine import Database
from app.main import create_app
from app.ratelimit.limiter import MessageRateLimiter
from tests.api.helpers import (
    CHAT,
    SESSIONS,
    STREAM,
    Json,
    count_rows,
    get_session,
    list_sessions,
    parse_sse,
    send,
    session_url,
)
from tests.conftest import make_settings, serve
from tests.redis_helpers import empty_redis_database
from tests.tokens import ISSUER, JWT_SECRET, hs256_token

LIMIT = "2/minute"


def open_settings(settings: Settings, **overrides: Any) -> Settings:
    return make_settings(settings.database_url, **overrides)


def auth_settings(settings: Settings, **overrides: Any) -> Settings:
    return make_settings(
        settings.database_url, auth_jwt_secret=JWT_SECRET, auth_issuer=ISSUER, **overrides
    )


def bearer(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {hs256_token(user_id)}"}


async def post_message(
    client: httpx.AsyncClient,
    user_id: str | None,
    message: str = "hello",
    *,
    session_id: str | None = None,
    url: str = CHAT,
) -> httpx.Response:
    """POST a message as `user_id` (a bearer token), or anonymously (open mode)."""
    body: Json = {"message": message}
    if session_id is not None:
        body["session_id"] = session_id
    headers = bearer(user_id) if user_id is not None else {}
    return await client.post(url, json=body, headers=headers)


def assert_rate_limited(response: httpx.Response) -> int:
    """A 429 with a JSON error body and a Retry-After in whole seconds; the seconds."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str)
    assert body["detail"]
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 60
    return int(retry_after)


@pytest.fixture
async def redis_url() -> str:
    return await empty_redis_database(14)


# --- Defaults and settings ----------------------------------------------------------------


def test_rate_limit_is_on_by_default_only_in_authenticated_mode(settings: Settings) -> None:
    assert open_settings(settings).rate_limit_active is False
    assert auth_settings(settings).rate_limit_active is True
    assert open_settings(settings, rate_limit_enabled=True).rate_limit_active is True
    assert auth_settings(settings, rate_limit_enabled=False).rate_limit_active is False


def test_limit_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_ENABLED", "true")
    monkeypatch.setenv("RATE_LIMIT_MESSAGES", "5/minute;50/hour")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("RATE_LIMIT_REDIS_RETRY_SECONDS", "2.5")
    monkeypatch.setenv("MAX_REQUEST_BODY_BYTES", "4096")
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://app.example.com, https://b.example.com")

    from_env = Settings(_env_file=None)

    assert from_env.rate_limit_enabled is True
    assert from_env.rate_limit_messages == "5/minute;50/hour"
    assert from_env.redis_url == "redis://127.0.0.1:6379/3"
    assert from_env.rate_limit_redis_retry_seconds == 2.5
    assert from_env.max_request_body_bytes == 4096
    assert from_env.cors_allow_origins == ["https://app.example.com", "https://b.example.com"]

    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("RATE_LIMIT_ENABLED", "false")
    blank = Settings(_env_file=None)
    assert blank.redis_url is None
    assert blank.rate_limit_enabled is False


def test_default_limits() -> None:
    defaults = Settings(_env_file=None)
    assert defaults.rate_limit_enabled is None
    assert defaults.redis_url is None
    assert defaults.rate_limit_redis_retry_seconds == 10
    assert defaults.max_request_body_bytes == 512 * 1024
    assert defaults.cors_allow_origins == []
    with pytest.raises(ValidationError):
        Settings(_env_file=None, max_request_body_bytes=1023)
    with pytest.raises(ValidationError):
        Settings(_env_file=None, rate_limit_redis_retry_seconds=0)


# --- Rate limits: open mode ---------------------------------------------------------------


async def test_open_mode_has_no_rate_limit_by_default(
    settings: Settings, database: Database
) -> None:
    app = create_app(open_settings(settings, rate_limit_messages=LIMIT))
    async with serve(app) as live:
        assert app.state.message_rate_limiter is None
        for index in range(3):
            await send(live.client, f"message {index}", user_id="alice")

    assert await count_rows(database) == (3, 6)


async def test_open_mode_with_rate_limit_enabled_limits_per_client_address(
    settings: Settings, database: Database
) -> None:
    app = create_app(open_settings(settings, rate_limit_enabled=True, rate_limit_messages=LIMIT))
    async with serve(app) as live:
        assert isinstance(app.state.message_rate_limiter, MessageRateLimiter)
        await send(live.client, "one", user_id="alice")
        await send(live.client, "two", user_id="bob")
        # The caller names the user in open mode, so naming another one does not help.
        response = await live.client.post(CHAT, json={"message": "three", "user_id": "carol"})
        assert_rate_limited(response)

    assert await count_rows(database) == (2, 4)


# --- Rate limits: authenticated mode ------------------------------------------------------


async def test_third_message_in_a_minute_is_refused_and_not_stored(
    settings: Settings, database: Database
) -> None:
    app = create_app(auth_settings(settings, rate_limit_messages=LIMIT))
    async with serve(app) as live:
        assert isinstance(app.state.message_rate_limiter, MessageRateLimiter)
        first = await post_message(live.client, "alice", "one")
        assert first.status_code == 200, first.text
        session_id = first.json()["session_id"]
        second = await post_message(live.client, "alice", "two", session_id=session_id)
        assert second.status_code == 200, second.text

        refused = await post_message(live.client, "alice", "three", session_id=session_id)
        assert_rate_limited(refused)
        # A new session is refused too, and nothing of either is stored.
        assert_rate_limited(await post_message(live.client, "alice", "four"))

        detail = await live.client.get(session_url(session_id), headers=bearer("alice"))
        assert detail.status_code == 200, detail.text
        assert detail.json()["message_count"] == 4
        assert "three" not in [m["content"] for m in detail.json()["messages"]]

    assert await count_rows(database) == (1, 4)


async def test_other_users_are_not_affected(settings: Settings, database: Database) -> None:
    app = create_app(auth_settings(settings, rate_limit_messages=LIMIT))
    async with serve(app) as live:
        for _ in range(2):
            assert (await post_message(live.client, "alice")).status_code == 200
        assert_rate_limited(await post_message(live.client, "alice"))

        for _ in range(2):
            response = await post_message(live.client, "bob")
            assert response.status_code == 200, response.text
        assert_rate_limited(await post_message(live.client, "bob"))

    assert await count_rows(database) == (4, 8)


async def test_streaming_counts_against_the_same_limit(
    settings: Settings, database: Database
) -> None:
    app = create_app(auth_settings(settings, rate_limit_messages=LIMIT))
    async with serve(app) as live:
        streamed = await post_message(live.client, "alice", "one", url=STREAM)
        assert streamed.status_code == 200, streamed.text
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert parse_sse(streamed.text)[-1].event == "done"
        assert (await post_message(live.client, "alice", "two")).status_code == 200

        # Both endpoints are now refused, the stream with a plain JSON error.
        assert_rate_limited(await post_message(live.client, "alice", "three", url=STREAM))
        assert_rate_limited(await post_message(live.client, "alice", "four"))
        await app.state.reply_tasks.wait_idle()

    assert await count_rows(database) == (2, 4)


async def test_reading_and_deleting_sessions_is_not_rate_limited(
    settings: Settings, database: Database
) -> None:
    app = create_app(auth_settings(settings, rate_limit_messages=LIMIT))
    async with serve(app) as live:
        first = await post_message(live.client, "alice", "one")
        second = await post_message(live.client, "alice", "two")
        assert_rate_limited(await post_message(live.client, "alice", "three"))

        for _ in range(5):
            listed = await live.client.get(SESSIONS, headers=bearer("alice"))
            assert listed.status_code == 200, listed.text
            assert listed.json()["total"] == 2
            opened = await live.client.get(
                session_url(first.json()["session_id"]), headers=bearer("alice")
            )
            assert opened.status_code == 200, opened.text
        deleted = await live.client.delete(
            session_url(second.json()["session_id"]), headers=bearer("alice")
        )
        assert deleted.status_code == 204, deleted.text

    assert await count_rows(database) == (1, 2)


async def test_rate_limit_can_be_turned_off_in_authenticated_mode(
    settings: Settings, database: Database
) -> None:
    app = create_app(auth_settings(settings, rate_limit_enabled=False, rate_limit_messages=LIMIT))
    async with serve(app) as live:
        assert app.state.message_rate_limiter is None
        for _ in range(3):
            response = await post_message(live.client, "alice")
            assert response.status_code == 200, response.text

    assert await count_rows(database) == (3, 6)


async def test_replicas_share_the_limit_through_redis(
    settings: Settings,
    database: Database,
    redis_url: str,
) -> None:
    user = f"user-{uuid.uuid4().hex}"  # Redis outlives test runs: a user no run has used.
    other = f"user-{uuid.uuid4().hex}"
    replica_settings = auth_settings(settings, rate_limit_messages=LIMIT, redis_url=redis_url)
    async with (
        serve(create_app(replica_settings)) as replica_a,
        serve(create_app(replica_settings)) as replica_b,
    ):
        assert (await post_message(replica_a.client, user)).status_code == 200
        assert (await post_message(replica_b.client, user)).status_code == 200

        assert_rate_limited(await post_message(replica_a.client, user))
        assert_rate_limited(await post_message(replica_b.client, user, url=STREAM))
        # Another user still has their full allowance, on either replica.
        assert (await post_message(replica_b.client, other)).status_code == 200
        assert (await post_message(replica_a.client, other)).status_code == 200

    assert await count_rows(database) == (4, 8)


async def test_in_process_limits_are_per_replica(settings: Settings, database: Database) -> None:
    """Without REDIS_URL each process counts on its own (the documented trade-off)."""
    replica_settings = auth_settings(settings, rate_limit_messages="1/minute")
    async with (
        serve(create_app(replica_settings)) as replica_a,
        serve(create_app(replica_settings)) as replica_b,
    ):
        assert (await post_message(replica_a.client, "alice")).status_code == 200
        assert (await post_message(replica_b.client, "alice")).status_code == 200
        assert_rate_limited(await post_message(replica_a.client, "alice"))

    assert await count_rows(database) == (2, 4)


async def test_unreachable_redis_limits_in_process_memory_and_warns_once(
    settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """An outage of the limiter's store does not stop the chat, nor lift the limit: each
    process then limits on its own."""
    app = create_app(
        auth_settings(settings, rate_limit_messages="1/minute", redis_url="redis://127.0.0.1:1/0")
    )
    with caplog.at_level(logging.WARNING, logger="app.ratelimit.limiter"):
        async with serve(app) as live:
            response = await post_message(live.client, "alice")
            assert response.status_code == 200, response.text
            for _ in range(3):
                assert_rate_limited(await post_message(live.client, "alice"))
            response = await post_message(live.client, "bob")
            assert response.status_code == 200, response.text

    warnings = [r for r in caplog.records if r.name == "app.ratelimit.limiter"]
    assert len(warnings) == 1, caplog.text
    assert await count_rows(database) == (2, 4)


# --- Rate limits: bursts and requests that are refused anyway ----------------------------

BURST_RATES = "10/minute;100/hour"


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_burst_gets_exactly_the_allowed_number_through(
    settings: Settings, database: Database, store: str
) -> None:
    shared = await empty_redis_database(14) if store == "redis" else None
    app = create_app(auth_settings(settings, rate_limit_messages=BURST_RATES, redis_url=shared))
    async with serve(app) as live:
        responses = await asyncio.gather(
            *(post_message(live.client, "alice", f"message {i}") for i in range(40))
        )
        statuses = Counter(response.status_code for response in responses)
        assert statuses == {200: 10, 429: 30}, statuses
        for response in responses:
            if response.status_code == 429:
                assert_rate_limited(response)
        # The refused messages took no room: another burst is still refused whole.
        again = await asyncio.gather(*(post_message(live.client, "alice") for _ in range(5)))
        assert [response.status_code for response in again] == [429] * 5

    assert await count_rows(database) == (10, 20)


INVALID_BODIES: list[Json] = [
    {"message": ""},
    {"message": "   "},
    {},
    {"message": "hello", "session_id": "not a valid id!"},
]


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("url", [CHAT, STREAM])
async def test_invalid_requests_use_no_room(
    settings: Settings, database: Database, store: str, url: str
) -> None:
    shared = await empty_redis_database(14) if store == "redis" else None
    app = create_app(auth_settings(settings, rate_limit_messages=LIMIT, redis_url=shared))
    async with serve(app) as live:
        for _ in range(10):
            for body in INVALID_BODIES:
                response = await live.client.post(url, json=body, headers=bearer("alice"))
                assert response.status_code == 422, response.text
        for index in range(2):
            response = await post_message(live.client, "alice", f"valid {index}", url=url)
            assert response.status_code == 200, response.text
        assert_rate_limited(await post_message(live.client, "alice", url=url))
        await app.state.reply_tasks.wait_idle()

    assert await count_rows(database) == (2, 4)


# --- Request body size --------------------------------------------------------------------

BODY_LIMIT = 2048


def chat_body(size: int) -> bytes:
    """A valid JSON chat request of exactly `size` bytes."""
    skeleton = json.dumps({"message": ""}).encode()
    body = json.dumps({"message": "x" * (size - len(skeleton))}).encode()
    assert len(body) == size
    return body


async def chunks(body: bytes, size: int = 500) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str)


async def test_body_over_the_limit_with_content_length_is_refused_as_json(
    settings: Settings, database: Database
) -> None:
    app = create_app(open_settings(settings, max_request_body_bytes=BODY_LIMIT))
    async with serve(app) as live:
        response = await live.client.post(
            CHAT, content=chat_body(3000), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert await count_rows(database) == (0, 0)
        assert_too_large(response)


@pytest.mark.parametrize("size", [BODY_LIMIT + 1, 3000, 100_000])
async def test_body_over_the_limit_with_content_length_is_refused(
    settings: Settings, database: Database, size: int
) -> None:
    app = create_app(open_settings(settings, max_request_body_bytes=BODY_LIMIT))
    async with serve(app) as live:
        response = await live.client.post(
            CHAT, content=chat_body(size), headers={"Content-Type": "application/json"}
        )
        assert response.request.headers["Content-Length"] == str(size)
        assert response.status_code == 413, response.text
        # The connection is still usable, and nothing was stored.
        assert (await list_sessions(live.client))["total"] == 0

    assert await count_rows(database) == (0, 0)


@pytest.mark.parametrize("size", [BODY_LIMIT + 1, 3000])
async def test_chunked_body_over_the_limit_is_refused(
    settings: Settings, database: Database, size: int
) -> None:
    app = create_app(open_settings(settings, max_request_body_bytes=BODY_LIMIT))
    async with serve(app) as live:
        response = await live.client.post(
            CHAT, content=chunks(chat_body(size)), headers={"Content-Type": "application/json"}
        )
        assert "Content-Length" not in response.request.headers
        assert response.request.headers["Transfer-Encoding"] == "chunked"
        assert_too_large(response)
        assert (await list_sessions(live.client))["total"] == 0

    assert await count_rows(database) == (0, 0)


async def test_body_at_the_limit_is_accepted(settings: Settings, database: Database) -> None:
    app = create_app(open_settings(settings, max_request_body_bytes=BODY_LIMIT))
    async with serve(app) as live:
        plain = await live.client.post(
            CHAT, content=chat_body(BODY_LIMIT), headers={"Content-Type": "application/json"}
        )
        assert plain.status_code == 200, plain.text
        chunked = await live.client.post(
            CHAT,
            content=chunks(chat_body(BODY_LIMIT - 1)),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 200, chunked.text

    assert await count_rows(database) == (2, 4)


async def test_oversized_bodies_do_not_count_against_the_rate_limit(
    settings: Settings, database: Database
) -> None:
    app = create_app(
        auth_settings(settings, rate_limit_messages=LIMIT, max_request_body_bytes=BODY_LIMIT)
    )
    async with serve(app) as live:
        headers = {**bearer("alice"), "Content-Type": "application/json"}
        for _ in range(3):
            response = await live.client.post(CHAT, content=chat_body(3000), headers=headers)
            assert response.status_code == 413, response.text
        for _ in range(2):
            assert (await post_message(live.client, "alice")).status_code == 200

    assert await count_rows(database) == (2, 4)


async def test_default_limit_admits_the_longest_message_in_escaped_emoji(
    settings: Settings, database: Database
) -> None:
    message_max_chars = Settings(_env_file=None).message_max_chars
    message = "\N{GRINNING FACE}" * message_max_chars
    body = json.dumps({"message": message}, ensure_ascii=True).encode("ascii")
    # Each emoji is a surrogate pair of \\uXXXX escapes: 12 bytes per character.
    assert len(body) >= 12 * message_max_chars

    app = create_app(open_settings(settings))
    async with serve(app) as live:
        response = await live.client.post(
            CHAT, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text[:500]
        session = await get_session(live.client, response.json()["session_id"])
        assert session["messages"][0]["content"] == message

    assert await count_rows(database) == (1, 2)
