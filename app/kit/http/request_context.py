"""Each request's id, its metrics and access log line, and the one place an unexpected
error is logged and answered.

The id comes from a sane `X-Request-ID` header (a proxy's or a client's, so that their logs and
ours can be joined) or is made here; every response carries it back, and so does the body of a
500, so that a user's report leads to the log line.

Unexpected errors are handled here rather than by a Starlette exception handler for
`Exception`: Starlette calls that handler and then re-raises, so uvicorn logged every 500 a
second time. Caught here, the error is logged once, with the id.
"""

import logging
import re
import time
import uuid

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit import logging as app_logging
from app.kit import metrics
from app.kit.db import unavailable

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("app.access")

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
    """The request's id, its metrics (by route template and status) and, with `access_log`,
    one log line per request with its route, status and duration (JSON logs: uvicorn's own
    access lines are off then, they know no route)."""

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        facts = app_logging.RequestFacts(_request_id(scope))
        # nginx's code for a client that went away before any answer was started.
        status_code = 499
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started, status_code
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                MutableHeaders(scope=message)[HEADER] = facts.request_id
            await send(message)

        token = app_logging.request_facts.set(facts)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Before the response has started only: later, a stream reports its own errors.
            reason = None if response_started else unavailable.unavailable_reason(exc)
            if reason is not None:
                await self._database_unavailable(scope, receive, send_with_id, reason, exc)
                return
            logger.exception(
                "unhandled error on %s %s (request %s)",
                scope["method"],
                scope["path"],
                facts.request_id,
            )
            if not response_started:
                response = JSONResponse(
                    {"detail": "Internal server error", "request_id": facts.request_id},
                    status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
                )
                await response(scope, receive, send_with_id)
            # Otherwise it is too late for a 500: returning without ending the response makes
            # the server close the connection, so the client sees a cut response.
        finally:
            self._record(scope, status_code, time.perf_counter() - started)
            app_logging.request_facts.reset(token)

    async def _database_unavailable(
        self, scope: Scope, receive: Receive, send: Send, reason: str, exc: Exception
    ) -> None:
        """Overload or an outage, not a bug: a warning without a traceback, and a 503 the
        client (or a load balancer) may retry after `Retry-After` seconds."""
        metrics.DB_UNAVAILABLE.labels(reason).inc()
        logger.warning(
            "database unavailable (%s) on %s %s: %s",
            reason,
            scope["method"],
            scope["path"],
            exc,
        )
        response = JSONResponse(
            {"detail": unavailable.DETAIL},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(unavailable.RETRY_AFTER_SECONDS)},
        )
        await response(scope, receive, send)

    def _record(self, scope: Scope, status_code: int, seconds: float) -> None:
        method = scope["method"]
        # The template the router matched; never the raw path (unbounded label values).
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        metrics.HTTP_REQUESTS.labels(method, route, str(status_code)).inc()
        metrics.HTTP_REQUEST_DURATION.labels(method, route).observe(seconds)
        if self.access_log:
            access_logger.info(
                "%s %s %d",
                method,
                route,
                status_code,
                extra={
                    "method": method,
                    "route": route,
                    "status": status_code,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )
