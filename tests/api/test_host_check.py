"""DNS rebinding: in open mode the service answers only requests for loopback names (and, once
opened to a network, IP addresses), plus what ALLOWED_HOSTS adds; with authentication any."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.kit.http.host_check import host_name
from app.main import create_app
from tests.conftest import LiveServer, make_settings
from tests.tokens import ISSUER, JWT_SECRET

LOOPBACK = ["localhost", "localhost:8000", "LocalHost.", "127.0.0.1", "127.0.0.1:8000",
            "127.31.2.9:1", "[::1]", "[::1]:8000"]  # fmt: skip
REBOUND = ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io"]
IP_ADDRESSES = ["10.0.0.5", "10.0.0.5:8000", "[fd00::5]:8000", "192.168.1.10"]
MALFORMED = ["localhost:80:80", "localhost:port", "[::1", "[::1]x", "::1"]


@asynccontextmanager
async def client_for(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    # /healthz touches neither the database nor the app's start-up state.
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}", **overrides))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def status_for(client: httpx.AsyncClient, host: str) -> int:
    return (await client.get("/healthz", headers={"Host": host})).status_code


def auth(**overrides: Any) -> dict[str, Any]:
    return {"auth_jwt_secret": JWT_SECRET, "auth_issuer": ISSUER, **overrides}


async def test_open_mode_refuses_other_names_with_a_readable_error(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        response = await client.get("/healthz", headers={"Host": "evil.example:8000"})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert "'evil.example:8000'" in detail
    assert "ALLOWED_HOSTS" in detail
    assert response.headers["x-request-id"]


async def test_open_mode_answers_loopback_names_only(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        assert {host: await status_for(client, host) for host in LOOPBACK} == dict.fromkeys(
            LOOPBACK, 200
        )
        refused = REBOUND + IP_ADDRESSES + MALFORMED
        assert {host: await status_for(client, host) for host in refused} == dict.fromkeys(
            refused, 400
        )


async def test_open_mode_on_a_network_also_answers_ip_addresses(tmp_path: Path) -> None:
    async with client_for(tmp_path, host="0.0.0.0", open_mode_allow_network=True) as client:
        allowed = LOOPBACK + IP_ADDRESSES
        assert {host: await status_for(client, host) for host in allowed} == dict.fromkeys(
            allowed, 200
        )
        assert {host: await status_for(client, host) for host in REBOUND} == dict.fromkeys(
            REBOUND, 400
        )


@pytest.mark.parametrize("network", [False, True])
async def test_allowed_hosts_adds_names_in_open_mode(tmp_path: Path, network: bool) -> None:
    options = {"host": "0.0.0.0", "open_mode_allow_network": True} if network else {}
    async with client_for(tmp_path, allowed_hosts=["chat.internal"], **options) as client:
        assert await status_for(client, "chat.internal:8000") == 200
        assert await status_for(client, "CHAT.internal.") == 200
        assert await status_for(client, "localhost") == 200
        assert await status_for(client, "evil.example") == 400


async def test_a_star_allows_any_name(tmp_path: Path) -> None:
    async with client_for(tmp_path, allowed_hosts=["*"]) as client:
        assert await status_for(client, "evil.example") == 200


async def test_authenticated_mode_answers_any_name_by_default(tmp_path: Path) -> None:
    async with client_for(tmp_path, **auth(host="0.0.0.0")) as client:
        for host in REBOUND + IP_ADDRESSES + LOOPBACK:
            assert await status_for(client, host) == 200, host


async def test_allowed_hosts_narrows_authenticated_mode(tmp_path: Path) -> None:
    async with client_for(tmp_path, **auth(allowed_hosts=["chat.example.com"])) as client:
        assert await status_for(client, "chat.example.com") == 200
        assert await status_for(client, "localhost:8000") == 200
        assert await status_for(client, "evil.example") == 400


async def test_a_request_without_host_is_answered(tmp_path: Path) -> None:
    """Only HTTP/1.0 clients omit it; no browser does."""
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}"))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.0",
        "method": "GET",
        "scheme": "http",
        "path": "/healthz",
        "raw_path": b"/healthz",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)

    assert sent[0]["status"] == 200


async def test_the_served_app_refuses_a_rebound_name(live_server: LiveServer) -> None:
    """Over a socket, as a browser would send it after rebinding evil.example to 127.0.0.1."""
    response = await live_server.client.get(
        "/api/v1/chat/sessions", headers={"Host": "evil.example"}
    )

    assert response.status_code == 400
    assert "ALLOWED_HOSTS" in response.json()["detail"]


def test_allowed_hosts_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", " Chat.Example.com., other.internal ,, ")

    assert Settings(_env_file=None).allowed_hosts == ["chat.example.com", "other.internal"]


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b"localhost", "localhost"),
        (b"LOCALHOST:80", "localhost"),
        (b"example.com.", "example.com"),
        (b"[::1]:8000", "::1"),
        (b"[::1]", "::1"),
        (b"127.0.0.1:8000", "127.0.0.1"),
        (b"a:b", None),
        (b"[::1]:", None),
        (b"[::1", None),
    ],
)
def test_host_name(header: bytes, name: str | None) -> None:
    assert host_name(header) == name
