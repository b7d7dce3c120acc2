"""The transport the OpenAI client reads the model's server through: HTTP/1.1 as the server
writes it (any cut into reads, chunked or sized or up to the close), connections reused, a
read timeout per response, and httpx's errors for what goes wrong."""

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

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


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_is_read_and_the_certificate_is_checked(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(3):
                writer.write(b"5\r\nhello\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://localhost:{srv.sockets[0].getsockname()[1]}"
    try:
        trusting = UpstreamTransport(ssl.create_default_context(cafile=str(cert)))
        assert b"".join(await _post(url, trusting)) == b"hello" * 3
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await _post(url, UpstreamTransport())  # the system's trust: a stranger's certificate
    finally:
        srv.close()
