"""The transport the OpenAI client reads the model's server through: HTTP/1.1 as the server
writes it (any cut into reads, chunked or sized or up to the close), connections reused, a
read timeout per response, and httpx's errors for what goes wrong."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx2
import pytest

from app.assistants.openai_compatible import _sse_json
from app.kit.http.upstream import UpstreamTransport

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None] | object"]


@asynccontextmanager
async def server(answer: Callable[..., object]) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw HTTP server on a free loopback port; the connections it accepted, counted."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await answer(reader, writer)  # type: ignore[misc]
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        srv.close()


async def _post(url: str, transport: UpstreamTransport, read: float = 5.0) -> list[bytes]:
    async with httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(read)) as client:
        return await _read(client, url)


async def _read(client: httpx2.AsyncClient, url: str) -> list[bytes]:
    async with client.stream("POST", f"{url}/v1/chat/completions", json={"a": 1}) as response:
        assert response.status_code == 200
        return [block async for block in response.aiter_bytes()]


EVENTS = (
    b'data: {"n": 1}\r\n\r\n: a comment\r\ndata: {"n":\r\ndata: 2}\r\n\r\n'
    b"event: x\ndata: [DONE]\n\n"
)


async def test_a_body_cut_anywhere_into_reads_gives_the_same_events() -> None:
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(EVENTS))
        for at in range(0, len(EVENTS), 3):  # three bytes a read
            writer.write(EVENTS[at : at + 3])
            await writer.drain()
            await asyncio.sleep(0)

    async with server(answer) as (url, _):
        blocks = await _post(url, UpstreamTransport())

    async def replay() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    assert b"".join(blocks) == EVENTS
    assert [chunk async for chunk in _sse_json(replay())] == [{"n": 1}, {"n": 2}]


async def test_chunked_and_close_delimited_bodies() -> None:
    async def chunked(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()

    async def until_close(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world")
        await writer.drain()
        writer.close()

    for answer in (chunked, until_close):
        async with server(answer) as (url, _):
            assert b"".join(await _post(url, UpstreamTransport())) == b"hello world"


async def test_a_connection_is_reused_for_the_next_request() -> None:
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    client = httpx2.AsyncClient(transport=UpstreamTransport())
    async with server(answer) as (url, connections), client:
        for _ in range(3):
            assert await _read(client, url) == [b"ok"]
    assert len(connections) == 1


async def test_a_server_that_goes_quiet_times_out() -> None:
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
        await writer.drain()
        await asyncio.sleep(10)

    async with server(answer) as (url, _):
        with pytest.raises(httpx2.ReadTimeout):
            await _post(url, UpstreamTransport(), read=0.2)


async def test_a_body_cut_short_is_a_protocol_error() -> None:
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
        await writer.drain()
        writer.close()

    async with server(answer) as (url, _):
        with pytest.raises(httpx2.RemoteProtocolError):
            await _post(url, UpstreamTransport())


async def test_no_server_is_a_connect_error() -> None:
    async with server(lambda *_: None) as (url, _):
        pass  # closed: nothing listens there any more
    with pytest.raises(httpx2.ConnectError):
        await _post(url, UpstreamTransport())


def test_the_service_loop_uvloop_reads_it_too() -> None:
    import uvloop

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def main() -> list[bytes]:
        async with server(answer) as (url, _):
            return await _post(url, UpstreamTransport())

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == [b"ok"]
