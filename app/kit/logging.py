"""Process-wide logging set-up, and the request id that log lines of a request can carry."""

import logging
from contextvars import ContextVar

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Set by `app.kit.http.request_context` for the duration of each HTTP request: anything logged while
# a request is handled (a formatter, a filter) can name the request the client was told about.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=_FORMAT)
    logging.getLogger("app").setLevel(level)
