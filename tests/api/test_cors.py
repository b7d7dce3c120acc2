"""CORS: the frontend's origins come from settings; nothing is allowed by default in
authenticated mode, and local dev servers are in open mode."""

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.kit.db.engine import Database
from app.main import create_app
from tests.api.helpers import CHAT, SESSIONS
from tests.conftest import make_settings, serve
from tests.tokens import ISSUER, JWT_SECRET, hs256_token

FRONTEND = "https://app.example.com"
EVIL = "https://evil.example"
LOCAL_DEV_ORIGINS = ["http://localhost:5173", "http://127.0.0.1:3000"]


@pytest.fixture
def unused_database_url(tmp_path: Path) -> str:
    """A database these tests never reach: pre-flights and refused requests do not query."""
    return f"sqlite:///{tmp_path / 'unused.db'}"


def auth_mode(database_url: str, **overrides: Any) -> Settings:
    return make_settings(database_url, auth_jwt_secret=JWT_SECRET, auth_issuer=ISSUER, **overrides)


async def preflight(
    client: httpx.AsyncClient,
    origin: str,
    *,
    method: str = "POST",
    headers: str = "authorization,content-type",
    path: str = CHAT,
) -> httpx.Response:
    return await client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def header_list(response: httpx.Response, name: str) -> set[str]:
    return {item.strip().lower() for item in response.headers.get(name, "").split(",") if item}


def assert_preflight_allowed(response: httpx.Response, origin: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert {"authorization", "content-type"} <= header_list(
        response, "Access-Control-Allow-Headers"
    )
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Origin" in response.headers.get("Vary", "")


def assert_preflight_refused(response: httpx.Response) -> None:
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.status_code >= 400


async def test_configured_origin_is_allowed(unused_database_url: str) -> None:
    app = create_app(auth_mode(unused_database_url, cors_allow_origins=[FRONTEND]))
    async with serve(app) as live:
        assert_preflight_allowed(await preflight(live.client, FRONTEND), FRONTEND)
        assert_preflight_allowed(
            await preflight(live.client, FRONTEND, method="DELETE", path=f"{SESSIONS}/abc"),
            FRONTEND,
        )
        # Rating a reply is a PUT (issue 14).
        rate = await preflight(
            live.client,
            FRONTEND,
            method="PUT",
            path=f"{SESSIONS}/abc/messages/00000000-0000-4000-8000-000000000000/feedback",
        )
        assert_preflight_allowed(rate, FRONTEND)
        assert "PUT" in rate.headers["Access-Control-Allow-Methods"]
        # A frontend elsewhere sends its messages with an Idempotency-Key.
        keyed = await preflight(
            live.client, FRONTEND, headers="authorization,content-type,idempotency-key"
        )
        assert_preflight_allowed(keyed, FRONTEND)
        assert "idempotency-key" in header_list(keyed, "Access-Control-Allow-Headers")
        # A simple request from the origin gets the header on the response itself.
        health = await live.client.get("/healthz", headers={"Origin": FRONTEND})
        assert health.headers["Access-Control-Allow-Origin"] == FRONTEND


@pytest.mark.parametrize("origin", [EVIL, "http://app.example.com", *LOCAL_DEV_ORIGINS])
async def test_other_origins_are_not_allowed(unused_database_url: str, origin: str) -> None:
    app = create_app(auth_mode(unused_database_url, cors_allow_origins=[FRONTEND]))
    async with serve(app) as live:
        assert_preflight_refused(await preflight(live.client, origin))
        health = await live.client.get("/healthz", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in health.headers


async def test_unlisted_request_headers_are_not_allowed(unused_database_url: str) -> None:
    app = create_app(auth_mode(unused_database_url, cors_allow_origins=[FRONTEND]))
    async with serve(app) as live:
        response = await preflight(live.client, FRONTEND, headers="x-made-up")
        assert response.status_code == 400
        assert "x-made-up" not in header_list(response, "Access-Control-Allow-Headers")


@pytest.mark.parametrize("origin", [*LOCAL_DEV_ORIGINS, "http://localhost", FRONTEND, EVIL])
async def test_authenticated_mode_allows_no_origin_by_default(
    unused_database_url: str, origin: str
) -> None:
    app = create_app(auth_mode(unused_database_url))
    async with serve(app) as live:
        assert_preflight_refused(await preflight(live.client, origin))
        health = await live.client.get("/healthz", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in health.headers


@pytest.mark.parametrize("origin", [*LOCAL_DEV_ORIGINS, "http://[::1]:8080", "http://localhost"])
async def test_open_mode_allows_local_dev_servers_by_default(
    unused_database_url: str, origin: str
) -> None:
    async with serve(create_app(make_settings(unused_database_url))) as live:
        assert_preflight_allowed(await preflight(live.client, origin), origin)


@pytest.mark.parametrize(
    "origin",
    [
        EVIL,
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example:3000",
        "http://192.168.1.10:5173",
        "null",
    ],
)
async def test_open_mode_does_not_allow_other_origins(
    unused_database_url: str, origin: str
) -> None:
    async with serve(create_app(make_settings(unused_database_url))) as live:
        assert_preflight_refused(await preflight(live.client, origin))


async def test_open_mode_with_configured_origins_allows_only_those(
    unused_database_url: str,
) -> None:
    app = create_app(make_settings(unused_database_url, cors_allow_origins=[FRONTEND]))
    async with serve(app) as live:
        assert_preflight_allowed(await preflight(live.client, FRONTEND), FRONTEND)
        for origin in LOCAL_DEV_ORIGINS:
            assert_preflight_refused(await preflight(live.client, origin))


async def test_401_from_an_allowed_origin_is_readable(unused_database_url: str) -> None:
    app = create_app(auth_mode(unused_database_url, cors_allow_origins=[FRONTEND]))
    async with serve(app) as live:
        response = await live.client.post(
            CHAT, json={"message": "hi"}, headers={"Origin": FRONTEND}
        )
        assert response.status_code == 401, response.text
        assert response.headers["Access-Control-Allow-Origin"] == FRONTEND


async def test_429_from_an_allowed_origin_is_readable_with_its_retry_after(
    settings: Settings, database: Database
) -> None:
    app = create_app(
        auth_mode(
            settings.database_url, cors_allow_origins=[FRONTEND], rate_limit_messages="1/minute"
        )
    )
    headers = {"Origin": FRONTEND, "Authorization": f"Bearer {hs256_token('alice')}"}
    async with serve(app) as live:
        sent = await live.client.post(CHAT, json={"message": "one"}, headers=headers)
        assert sent.status_code == 200, sent.text

        refused = await live.client.post(CHAT, json={"message": "two"}, headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Access-Control-Allow-Origin"] == FRONTEND
        assert "retry-after" in header_list(refused, "Access-Control-Expose-Headers")
        assert int(refused.headers["Retry-After"]) >= 1


async def test_413_from_an_allowed_origin_is_readable(unused_database_url: str) -> None:
    app = create_app(
        auth_mode(unused_database_url, cors_allow_origins=[FRONTEND], max_request_body_bytes=1024)
    )
    headers = {
        "Origin": FRONTEND,
        "Authorization": f"Bearer {hs256_token('alice')}",
        "Content-Type": "application/json",
    }
    async with serve(app) as live:
        body = b'{"message": "' + b"x" * 2000 + b'"}'
        response = await live.client.post(CHAT, content=body, headers=headers)
        assert response.status_code == 413, response.text
        assert response.headers.get("Access-Control-Allow-Origin") == FRONTEND
