"""`python -m app`: serve the API with uvicorn on HOST:PORT."""

import asyncio
import gc
import math
import socket
import sys
import time

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from app.config import describe_invalid_settings, get_settings
from app.kit.db.preflight import DatabaseUnavailable, check_database
from app.kit.http.header_limit import http_protocol
from app.kit.logging import configure_logging
from app.main import UnsafeConfiguration, create_app
from app.replies.generation import ReplyTasks

# How much longer than the grace period uvicorn waits for requests: time for the replies
# stopped at the deadline to be saved and their requests to answer.
_UVICORN_MARGIN_SECONDS = 2


class _Server(uvicorn.Server):
    """uvicorn, telling the app when shutdown began, so that waiting for open streams
    (uvicorn's part) and for replies still being generated (the app's) share one grace
    period instead of spending it twice; and freezing the start-up heap once it is up."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_seconds = grace_seconds

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What is alive once the app is up (modules, the app, its start-up state: some 170,000
        # objects) lives as long as the process. Freezing it keeps the collector's full passes,
        # which stall every request in flight, from walking all of it each time
        # (docs/performance.md). The collection first frees start-up garbage rather than
        # freezing it.
        gc.collect()
        gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        deadline = time.monotonic() + self._grace_seconds
        self._app.state.shutdown_deadline = deadline
        # uvicorn cancels the requests still open when its own timeout ends (a plain request
        # then answered a bare 500, a stream was cut without its end). So the app stops the
        # replies at the deadline, which saves each and lets its request answer, and uvicorn
        # waits _UVICORN_MARGIN_SECONDS longer (main) before it cancels anything.
        reply_tasks: ReplyTasks | None = getattr(self._app.state, "reply_tasks", None)
        if reply_tasks is not None:
            reply_tasks.stop_all_at(deadline)
        await super().shutdown(sockets)


def main() -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:
        sys.exit(f"error: {describe_invalid_settings(exc)}")
    configure_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
        # Before the server starts: a database that cannot be used is then one line that says
        # why, not a traceback from the start-up migration.
        asyncio.run(check_database(settings))
    except (UnsafeConfiguration, DatabaseUnavailable) as exc:
        sys.exit(f"error: {exc}")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Logging is configured above (configure_logging); uvicorn's loggers go through it.
        log_config=None,
        # JSON logs have the app's own access lines, which name the route and the duration.
        access_log=settings.log_format == "text",
        http=http_protocol(settings.max_request_header_bytes),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds)
        + _UVICORN_MARGIN_SECONDS,
    )
    # Like uvicorn itself, the process ends by re-raising SIGTERM after a clean shutdown
    # (exit status 143), so supervisors see that it stopped because it was told to.
    try:
        _Server(config, app, settings.shutdown_grace_seconds).run()
    except KeyboardInterrupt:
        # Ctrl-C: uvicorn shut down cleanly, then re-raised SIGINT, which asyncio turns into a
        # KeyboardInterrupt. Stopping a server from its terminal is a normal end: status 0,
        # no traceback, and no error line from `make run`.
        return


if __name__ == "__main__":
    main()
