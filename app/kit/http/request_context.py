"""Each request's id, and the one place an unexpected error is logged and answered.

The id comes from a sane `X-Request-ID` header (a proxy's or a client's, so that their logs and
ours can be joined) or is made here; every response carries it back, and so does the body of a
500, so that a user's report leads to the log line.

Unexpected errors are handled here rather than by a Starlette exception handler for
`Exception`: Starlette calls that handler and then re-raises, so uvicorn logged every 500 a
second time. Caught here, the error is logged once, with the id.
"""

import logging
import re
import uuid

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit import logging as app_logging

logger = logging.getLogger(__name__)

HEADER = "X-Request-ID"
# Long enough for UUIDs, ULIDs and the ids of common proxies and tracers; nothing that could
# forge a log line or a header (spaces, quotes, control characters).
_SANE_ID = re.compile(rb"[A-Za-z0-9._:=+/-]{1,128}")


def _request_id(scope: Scope) -> str:
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _SANE_ID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        token = app_logging.request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error on %s %s (request %s)",
                scope["method"],
                scope["path"],
                request_id,
            )
            if response_started:
                # Too late for a 500: returning without ending the response makes the server
                # close the connection, so the client sees a cut response, not a complete one.
                return
            response = JSONResponse(
                {"detail": "Internal server error", "request_id": request_id},
                status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            )
            await response(scope, receive, send_with_id)
        finally:
            app_logging.request_id.reset(token)
