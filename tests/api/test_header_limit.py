"""Request heads over MAX_REQUEST_HEADER_BYTES: refused with 431 by the real server before it
has read them whole, with each of uvicorn's HTTP protocols; heads under it are served."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.kit.http.header_limit import h11_protocol, http_protocol
from app.main import create_app
from tests.conftest import LiveServer, make_settings, serve

LIMIT = 64 * 1024
DETAIL = f"Request header fields too large (limit {LIMIT} bytes)"
PROTOCOLS: dict[str, Callable[[int], type[asyncio.Protocol]]] = {
    "httptools": http_protocol,
    "h11": h11_protocol,
}


@pytest.fixture(scope="module", params=list(PROTOCOLS))
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveServer]:
    """The app as `python -m app` serves it (/healthz needs no database)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('header-limit') / 'unused.db'}"
    app = create_app(make_settings(url, max_request_header_bytes=LIMIT))
    async with serve(app, http=PROTOCOLS[request.param](LIMIT)) as live:
        yield live


async def send_head_slowly(base_url: str, header_bytes: int) -> tuple[int, bytes]:
    """Send a request whose `Authorization` header is `header_bytes` long, 16 KiB at a time,
    reading what comes back meanwhile (as browsers and curl do), until the server has answered
    or stops taking it; how much of the head was sent, and the answer."""
    address = urlsplit(base_url)
    assert address.hostname is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    answer = bytearray()
    receiving = asyncio.create_task(_receive(reader, answer))
    # Only so that a server that never answers fails the test instead of hanging it.
    async with asyncio.timeout(60):
        sent = await _send(writer, receiving, header_bytes)
        await receiving
    return sent, bytes(answer)


async def _receive(reader: asyncio.StreamReader, answer: bytearray) -> None:
    with suppress(ConnectionError):
        while data := await reader.read(65536):
            answer += data


async def _send(
    writer: asyncio.StreamWriter, receiving: asyncio.Task[None], header_bytes: int
) -> int:
    sent = 0
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ")
        chunk = b"a" * (16 * 1024)
        with suppress(ConnectionError):
            while sent < header_bytes and not receiving.done():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                # Let the reading task see what has arrived, as a client reading while it
                # sends would.
                await asyncio.sleep(0)
        return sent
    finally:
        writer.close()


async def test_a_huge_header_is_refused_before_it_is_read_whole(server: LiveServer) -> None:
    size = 32 * 1024 * 1024
    sent, answer = await send_head_slowly(server.base_url, size)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"detail": DETAIL}
    # The server closed the connection long before the client was done.
    assert sent < size


async def test_a_head_just_over_the_limit_is_refused(server: LiveServer) -> None:
    response = await server.client.get("/healthz", headers={"X-Padding": "a" * LIMIT})

    assert response.status_code == 431
    assert response.json() == {"detail": DETAIL}


async def test_large_tokens_and_cookies_under_the_limit_are_served(server: LiveServer) -> None:
    response = await server.client.get(
        "/healthz",
        headers={"Authorization": "Bearer " + "t" * 16 * 1024, "Cookie": "c=" + "v" * 30 * 1024},
    )

    assert response.status_code == 200
    # The connection stays usable.
    assert (await server.client.get("/healthz")).status_code == 200


async def test_the_app_refuses_a_head_over_the_limit_under_any_server(tmp_path: Path) -> None:
    """A head that arrives complete is measured by the app, which answers like for any other
    error (JSON, request id)."""
    app = create_app(
        make_settings(f"sqlite:///{tmp_path / 'unused.db'}", max_request_header_bytes=2048)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        refused = await client.get("/healthz", headers={"X-Padding": "a" * 2048})
        served = await client.get("/healthz", headers={"X-Padding": "a" * 1800})

    assert refused.status_code == 431
    assert refused.json() == {"detail": "Request header fields too large (limit 2048 bytes)"}
    assert refused.headers["x-request-id"]
    assert served.status_code == 200
