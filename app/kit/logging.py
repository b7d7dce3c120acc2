"""Process-wide logging set-up (text for a terminal, or one JSON object per line for a log
pipeline), and what log lines of a request can carry: its id, and who made it, hashed."""

import hashlib
import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(slots=True)
class RequestFacts:
    """What is known about the request being handled, filled in as it is learnt. Mutable:
    a dependency that runs in a copied context still reaches the middleware's object."""

    request_id: str
    user_hash: str | None = None


# Set by `app.kit.http.request_context` for the duration of each HTTP request: anything logged
# while a request is handled can name the request the client was told about.
request_facts: ContextVar[RequestFacts | None] = ContextVar("request_facts", default=None)


def current_request_id() -> str | None:
    facts = request_facts.get()
    return None if facts is None else facts.request_id


def note_user(user_id: str | None) -> None:
    """Record who makes the current request, for its log lines: as a hash, never the id."""
    facts = request_facts.get()
    if facts is not None and user_id is not None:
        facts.user_hash = user_hash(user_id)


def user_hash(user_id: str) -> str:
    """A short, stable pseudonym of a user id: the same user's lines can be joined, the id
    is not in the logs."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# Attributes every LogRecord has; anything else on a record was passed as `extra`.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the request's
    id and user hash when there is a request, `extra` fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        facts = request_facts.get()
        if facts is not None:
            line["request_id"] = facts.request_id
            if facts.user_hash is not None:
                line["user"] = facts.user_hash
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Log to stderr in `log_format`; uvicorn's loggers go through the same handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("app").setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
