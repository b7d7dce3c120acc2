"""Refuse request heads (request line and headers) over a size limit with 431.

Two parts. The server's HTTP protocol stops reading a head that grows past the limit before
it is complete: uvicorn's parsers have no limit of their own (httptools' partial header grows
as long as the client sends, and a 32 MB `Authorization` header was read for 2.1 s), or answer
400 (h11), and by the time an ASGI middleware runs, the head has been read whole. A head that
arrived complete in one read, so that the protocol saw it only once done, is measured by the
middleware, which answers like every other error: JSON `{"detail": ...}`, with CORS and the
request id. The protocol's own 431 comes before the app, so it has neither.
"""

import asyncio
import json
import logging
from typing import Any, ClassVar

import h11
from fastapi import status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


def _detail(max_bytes: int) -> str:
    return f"Request header fields too large (limit {max_bytes} bytes)"


def head_size(scope: Scope) -> int:
    """The bytes of the request line and headers as sent (give or take optional spaces)."""
    target = len(scope["raw_path"]) + (
        len(scope["query_string"]) + 1 if scope["query_string"] else 0
    )
    request_line = len(scope["method"]) + 1 + target + len(" HTTP/1.1\r\n")
    return request_line + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2


class HeaderSizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and head_size(scope) > self.max_bytes:
            response = JSONResponse(
                {"detail": _detail(self.max_bytes)},
                status_code=status.HTTP_431_REQUEST_HEADER_FIELDS_TOO_LARGE,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# After a 431 the client may still be sending the rest of its head. Closing at once would make
# the kernel answer that with a reset, which discards the 431 before a client reads it, so
# the rest is read and dropped (unparsed) for a while, as nginx's lingering close does.
_LINGER_BYTES = 1024 * 1024
_LINGER_SECONDS = 5.0


class _HeadLimit:
    """What both protocols share: the limit, and answering 431 from outside the app."""

    max_head_bytes: ClassVar[int]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    server_state: Any
    client: tuple[str, int] | None
    _lingering_bytes: int | None = None

    def _refuse_head(self) -> None:
        logger.warning(
            "refused a request head over %d bytes from %s", self.max_head_bytes, self.client
        )
        body = json.dumps({"detail": _detail(self.max_head_bytes)}).encode()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering_bytes = 0
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _lingered(self, data: bytes) -> bool:
        """Whether `data` came after a 431, and so was dropped."""
        if self._lingering_bytes is None:
            return False
        self._lingering_bytes += len(data)
        if self._lingering_bytes > _LINGER_BYTES:
            self.transport.close()
        return True


def http_protocol(max_head_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools where installed, as uvicorn's "auto" picks, else
    h11) with `max_head_bytes` as the limit; for `uvicorn.Config(http=...)`."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover (uvicorn[standard] brings httptools)
        return h11_protocol(max_head_bytes)

    class LimitedHttpToolsProtocol(_HeadLimit, HttpToolsProtocol):
        """httptools keeps a header's text until it is complete: count what arrives while a
        head is being read, and stop past the limit."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._reading_head = False
            self._head_began_in_this_read = False
            self._head_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading_head = True
            self._head_began_in_this_read = True
            self._head_bytes = 0

        def on_headers_complete(self) -> None:
            self._reading_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._lingered(data):
                return
            self._head_began_in_this_read = False
            super().data_received(data)
            if not self._reading_head or self.transport.is_closing():
                return
            # The read in which a head began may also hold the end of the previous request,
            # so it is not counted: a head is refused within one read past the limit.
            if not self._head_began_in_this_read:
                self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse_head()

    LimitedHttpToolsProtocol.max_head_bytes = max_head_bytes
    return LimitedHttpToolsProtocol


def h11_protocol(max_head_bytes: int) -> type[asyncio.Protocol]:
    """h11 stops buffering an incomplete head past its `max_incomplete_event_size` by itself,
    but uvicorn answers that with a 400: answer 431."""

    class LimitedH11Protocol(_HeadLimit, H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_bytes)

        def data_received(self, data: bytes) -> None:
            if not self._lingered(data):
                super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            buffered, _closed = self.conn.trailing_data
            if self.conn.their_state is h11.ERROR and len(buffered) > max_head_bytes:
                self._refuse_head()
            else:
                super().send_400_response(msg)

    LimitedH11Protocol.max_head_bytes = max_head_bytes
    return LimitedH11Protocol
