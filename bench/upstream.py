"""The fake OpenAI-compatible upstream of the benchmarks, in its own process.

Default: the tests' `FakeOpenAI` served by uvicorn (one SSE event per chunk, JSON-encoded as
OpenAI does), with the reply's size taken from the last user message: `chunks=N chars=M`
streams N chunks of M characters each, as fast as the socket takes them.
Run: `python -m bench.upstream --port 8001`.

`--paced`: a paced stream, for load (`bench.stream_load`): the last user message
`paced chunks=N rate=R` streams N chunks at R a second (chunk i is due i/R seconds after the
request arrived). Each chunk's text is `i@T;`, where T is the time it was written to the
socket (wall clock, microseconds modulo 10^9, zero-padded to 9 digits), so that a client
can tell the delay every hop after the upstream added; a last chunk `#N:H` gives how many
chunks were sent and the first 16 hex digits of the SHA-256 of all their text, so that a
stored reply can be checked against what was sent. This server is plain asyncio (uvloop
where installed) with one timer for all its streams, so that the upstream itself keeps up
with thousands of streams; `--reuse-port` lets several processes share one port (the
kernel spreads connections between them).
"""

import argparse
import asyncio
import hashlib
import heapq
import json
import re
import socket
import time
from dataclasses import dataclass, field
from typing import cast

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.openai_server import FakeOpenAI, Respond

_SIZE = re.compile(r"chunks=(\d+)\s+chars=(\d+)")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def size_message(chunks: int, chars: int) -> str:
    """The user message that asks the upstream for a reply of `chunks` x `chars` characters."""
    return f"chunks={chunks} chars={chars}"


def reply_chunks(chunks: int, chars: int) -> list[str]:
    return [(_ALPHABET[i % len(_ALPHABET)] * chars) for i in range(chunks)]


class SizedFakeOpenAI(FakeOpenAI):
    """Replies as large as the last user message asks (see `size_message`)."""

    async def _complete(self, request: Request) -> Response:
        body = await request.json()  # Starlette caches it: the parent reads it again.
        user_messages = [m for m in body.get("messages", []) if m.get("role") == "user"]
        match = _SIZE.search(str(user_messages[-1].get("content", ""))) if user_messages else None
        chunks, chars = (int(match[1]), int(match[2])) if match else (4, 4)
        self.script.append(Respond(chunks=reply_chunks(chunks, chars), usage=(10, chunks)))
        response = await super()._complete(request)
        self.requests.clear()  # no need to keep every body
        return response


# --- The paced upstream ----------------------------------------------------------------------

_PACED = re.compile(r"paced chunks=(\d+) rate=([\d.]+)")
TIMESTAMP_MODULUS_US = 10**9  # send times are written modulo this (1,000 s)
_CHUNK_PREFIX = (
    b'data: {"id":"chatcmpl-paced","object":"chat.completion.chunk","created":0,'
    b'"model":"paced","choices":[{"index":0,"delta":{"content":"'
)
_CHUNK_SUFFIX = b'"},"finish_reason":null}],"usage":null}\n\n'
_FINISH = (
    b'data: {"id":"chatcmpl-paced","object":"chat.completion.chunk","created":0,'
    b'"model":"paced","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":null}\n\n'
)
_USAGE = (
    b'data: {"id":"chatcmpl-paced","object":"chat.completion.chunk","created":0,'
    b'"model":"paced","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":%d,'
    b'"total_tokens":0}}\n\n'
)
_DONE = b"data: [DONE]\n\n"
_TITLE = (
    b'{"id":"chatcmpl-title","object":"chat.completion","created":0,"model":"paced",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"A paced reply"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":3,'
    b'"total_tokens":4}}'
)
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def paced_message(chunks: int, rate: float) -> str:
    """The user message that asks the paced upstream for `chunks` chunks at `rate` a second."""
    return f"paced chunks={chunks} rate={float(rate):f}"


def paced_chunk(index: int, sent_us: int) -> str:
    return f"{index}@{sent_us % TIMESTAMP_MODULUS_US:09d};"


def end_marker(count: int, sent_text: str) -> str:
    return f"#{count}:{hashlib.sha256(sent_text.encode()).hexdigest()[:16]}"


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


@dataclass
class _PacedStream:
    transport: asyncio.Transport
    chunks: int
    interval: float
    started: float
    sent: int = 0
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)


class PacedUpstream:
    """Every open stream's next chunk in one heap, by due time; one task writes what is due."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _PacedStream]] = []
        self._order = 0
        self._waiter: asyncio.Future[None] | None = None

    def add(self, stream: _PacedStream) -> None:
        self._push(stream.started, stream)
        self._wake()  # its first chunk is due at once

    def _push(self, due: float, stream: _PacedStream) -> None:
        self._order += 1
        heapq.heappush(self._due, (due, self._order, stream))

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._due and self._due[0][0] <= now:
                _, _, stream = heapq.heappop(self._due)
                if stream.transport.is_closing():
                    continue
                self._send(stream)
                if stream.sent < stream.chunks:
                    self._push(stream.started + stream.sent * stream.interval, stream)
            # Sleep until the next chunk is due, or a new stream comes: a timer and a future,
            # not a timeout (which costs an exception each time it expires).
            self._waiter = loop.create_future()
            timer = loop.call_at(self._due[0][0], self._wake) if self._due else None
            await self._waiter
            if timer is not None:
                timer.cancel()

    @staticmethod
    def _send(stream: _PacedStream) -> None:
        text = paced_chunk(stream.sent, time.time_ns() // 1000)
        stream.digest.update(text.encode())
        stream.sent += 1
        out = _http_chunk(_CHUNK_PREFIX + text.encode() + _CHUNK_SUFFIX)
        if stream.sent == stream.chunks:
            end = f"#{stream.chunks}:{stream.digest.hexdigest()[:16]}".encode()
            out += _http_chunk(_CHUNK_PREFIX + end + _CHUNK_SUFFIX)
            usage = _USAGE % (stream.chunks + 1)
            out += _http_chunk(_FINISH) + _http_chunk(usage) + _http_chunk(_DONE) + b"0\r\n\r\n"
        stream.transport.write(out)


class _PacedProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 for the OpenAI SDK and a load generator: keep-alive requests,
    a body by Content-Length, POST /v1/chat/completions (streamed) and GET /healthz."""

    def __init__(self, upstream: PacedUpstream) -> None:
        self._upstream = upstream
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return  # the rest of the body is still to come
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self._answer(head.split(" ", 2), body)

    def _answer(self, request_line: list[str], body: bytes) -> None:
        assert self._transport is not None
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else ""
        if method == "GET" and path == "/healthz":
            payload = b'{"status":"ok"}'
            self._transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(payload), payload)
            )
            return
        match = None
        if method == "POST" and path == "/v1/chat/completions":
            request = json.loads(body)
            if not request.get("stream"):
                # A plain request: the session's title, which the service asks for beside the
                # first reply. Answered at once: a paced stream here would cost the service a
                # second paced reply per stream (read until its title timeout), counted in its
                # CPU but not in the chunks it relays.
                self._transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%b" % (len(_TITLE), _TITLE)
                )
                return
            users = [m for m in request.get("messages", []) if m.get("role") == "user"]
            match = _PACED.search(str(users[-1].get("content", ""))) if users else None
        if match is None:
            self._transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        chunks, rate = int(match[1]), float(match[2])
        self._transport.write(_STREAM_HEAD)
        loop = asyncio.get_running_loop()
        self._upstream.add(_PacedStream(self._transport, max(1, chunks), 1 / rate, loop.time()))


async def serve_paced(port: int, reuse_port: bool) -> None:
    upstream = PacedUpstream()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _PacedProtocol(upstream),
        "127.0.0.1",
        port,
        reuse_port=reuse_port,
        backlog=4096,
    )
    async with server:
        await upstream.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paced", action="store_true", help="the paced upstream (see above)")
    parser.add_argument(
        "--reuse-port", action="store_true", help="SO_REUSEPORT: several processes, one port"
    )
    args = parser.parse_args()
    if args.paced:
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            asyncio.run(serve_paced(args.port, args.reuse_port))
        else:
            uvloop.run(serve_paced(args.port, args.reuse_port))
        return
    uvicorn.run(SizedFakeOpenAI().app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
