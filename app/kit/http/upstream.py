"""An HTTP/1.1 transport for the OpenAI SDK's client, for the model's streamed replies.

httpx's own transport (httpcore, h11 and anyio) reads a streamed reply at a cost per read: an
anyio timeout scope, h11's pure-Python parser, a few layers of iterators. A streamed reply is
one read per token, so that was the largest part of the service's CPU per relayed token
(docs/performance.md, "Concurrent streams"). Here a connection is an asyncio protocol fed by
httptools (uvicorn's C parser, installed already): a read appends the bytes and wakes the
reader, and the read timeout is one timer per response, moved at most once per timeout,
rather than one per read. The SDK keeps the rest: requests, statuses, errors, retries.

What it does not do, and who does then: HTTP/2 (httpx neither, by default) and proxies (with
proxy settings in the environment `upstream_transport` gives httpx's own transport).
"""

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx2
from httpx2._config import create_ssl_context

# Body bytes buffered before reading from the socket pauses, until the reader catches up.
_HIGH_WATER = 256 * 1024
# Idle connections kept per server, for the next request.
_IDLE_PER_SERVER = 100


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time: the response's head, then its body."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] = loop.create_future()
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self._keep_alive = False
        self.error: Exception | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._read_at = loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout: float | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, but have the same methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._read_at = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx2.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx2.RemoteProtocolError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.head.done() and self._until_close():
            self._on_message_complete()  # a body that ends with the connection
        else:
            self._fail(httpx2.RemoteProtocolError("the server closed the connection mid-response"))

    # --- httptools callbacks -----------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim response: the real head follows
            self.status, self.reason, self.headers = 0, b"", []
            return
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:  # not an interim response's end
            # Asked now: once the message is done the parser no longer knows.
            self._keep_alive = self._parser.should_keep_alive()
            self._on_message_complete()

    # --- The request's side ------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def watch(self, read_timeout: float | None) -> None:
        """Fail the response if nothing is read for `read_timeout` seconds (None: never)."""
        self._read_timeout = read_timeout
        self._read_at = self._loop.time()
        if read_timeout is not None:
            self._timer = self._loop.call_at(self._read_at + read_timeout, self._check_read)

    def take(self) -> bytes:
        data = b"".join(self.body) if len(self.body) > 1 else self.body[0]
        self.body.clear()
        self.buffered = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._read_at = self._loop.time()
            self._transport.resume_reading()
        return data

    async def wait(self) -> None:
        """Until body bytes, the body's end, or a failure."""
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    @property
    def reusable(self) -> bool:
        return self.complete and self.error is None and not self.closed and self._keep_alive

    def reset(self) -> None:
        """Ready for the next request on the same connection."""
        self._parser = httptools.HttpResponseParser(self)
        self.status, self.reason, self.headers = 0, b"", []
        self.head = self._loop.create_future()
        self.body.clear()
        self.buffered = 0
        self.complete = False
        self._keep_alive = False
        self.error = None

    def close(self) -> None:
        self._stop_watching()
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _until_close(self) -> bool:
        headers = {name.lower() for name, _ in self.headers}
        return b"content-length" not in headers and b"transfer-encoding" not in headers

    def _on_message_complete(self) -> None:
        self.complete = True
        self._stop_watching()
        self._wake()

    def _check_read(self) -> None:
        assert self._read_timeout is not None
        if self.complete or self.error is not None:
            return
        due = self._read_at + self._read_timeout
        if self._paused or self._loop.time() < due:  # read since: look again then
            self._timer = self._loop.call_at(max(due, self._loop.time() + 0.01), self._check_read)
            return
        self._fail(httpx2.ReadTimeout("no data from the server within the read timeout"))
        self.close()

    def _stop_watching(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a request that gave up waiting logs nothing
        self._stop_watching()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Body(httpx2.AsyncByteStream):
    def __init__(
        self, transport: "UpstreamTransport", key: tuple[str, str, int], conn: _Connection
    ):
        self._transport = transport
        self._key = key
        self._conn = conn
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take()
            elif conn.error is not None:
                raise conn.error
            elif conn.complete:
                return
            else:
                await conn.wait()

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._transport.release(self._key, self._conn)


class UpstreamTransport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 over asyncio and httptools, with idle connections kept for reuse."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        head = [f"{request.method} ".encode(), url.raw_path, b" HTTP/1.1\r\n"]
        chunked = False
        for name, value in request.headers.raw:
            chunked = chunked or (name.lower() == b"transfer-encoding" and b"chunked" in value)
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        if chunked:
            body = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        conn = self._reused(key) or await self._connect(key, timeouts.get("connect"))
        try:
            conn.send(b"".join(head) + body)
            conn.watch(timeouts.get("read"))
            await conn.head
        except BaseException:
            conn.close()
            raise
        return httpx2.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, key, conn),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason.strip()},
        )

    def release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        """The response was read or given up: keep the connection if it can serve another."""
        idle = self._idle.setdefault(key, [])
        if conn.reusable and len(idle) < _IDLE_PER_SERVER:
            conn.reset()
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def _reused(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self, key: tuple[str, str, int], seconds: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if scheme == "https":
            if self._ssl is None:
                self._ssl = create_ssl_context()
            tls = {"ssl": self._ssl, "server_hostname": host}
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(lambda: _Connection(loop), host, port, **tls)
        except TimeoutError as exc:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpx2.ConnectError(f"connecting to {host}:{port} failed: {exc}") from exc
        return conn


def upstream_transport() -> httpx2.AsyncBaseTransport | None:
    """The transport for the model's server: this one, unless the environment names a proxy
    (then None: httpx's own, which honours it)."""
    return None if urllib.request.getproxies() else UpstreamTransport()
