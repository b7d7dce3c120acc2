"""What is recorded with each assistant message: who wrote it, how it ended, what it cost."""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from app.assistants import AssistantError, ReplyEnd
from app.kit.errors import AssistantTimedOut, AssistantUnavailable, ChatError, ShuttingDown

logger = logging.getLogger(__name__)

ReplyStatus = Literal["complete", "incomplete", "failed"]

# An assistant message is stored with this status when its generation starts; its text is
# saved as it grows, and it ends complete, incomplete (cut short, with what came) or failed.
GENERATING = "generating"
# Assistant messages with this status have no text: they mark a reply that never came.
FAILED = "failed"
# The error and finish reason of a reply the user stopped (POST .../stop).
STOPPED = "stopped"
# The error of a reply the service stopped because it was shutting down.
SHUTDOWN = "shutdown"
# The error of a reply whose process died (a crash, kill -9) before it ended.
INTERRUPTED = "interrupted"


@dataclass
class ReplyTimer:
    """Latency of one reply: to its first token, and in total."""

    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None

    def token_arrived(self) -> float | None:
        """Seconds from the start to this token if it is the first, else None."""
        if self.first_token_at is not None:
            return None
        self.first_token_at = time.monotonic()
        return self.first_token_at - self.started

    def as_metadata(self) -> dict[str, int | None]:
        def ms(moment: float | None) -> int | None:
            return None if moment is None else round((moment - self.started) * 1000)

        return {"first_token_ms": ms(self.first_token_at), "total_ms": ms(time.monotonic())}


def reply_metadata(
    *,
    provider: str,
    model: str,
    status: ReplyStatus,
    timer: ReplyTimer,
    end: ReplyEnd | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """`model` is the configured one, recorded when the reply ended before naming its own.

    Without `end` the reply was cut short: its finish reason is "stopped" when the user
    stopped it, "error" otherwise."""
    metadata: dict[str, Any] = {
        "provider": provider,
        "model": end.model if end else model,
        "status": status,
        "finish_reason": end.finish_reason if end else (STOPPED if error == STOPPED else "error"),
        "usage": end.usage.as_metadata() if end and end.usage else None,
        "latency": timer.as_metadata(),
        "sources": [source.as_metadata() for source in end.sources] if end else [],
    }
    if error is not None:
        metadata["error"] = error
    return metadata


def generating_metadata(*, provider: str, model: str) -> dict[str, Any]:
    """The metadata of a reply while it is generated."""
    return {"provider": provider, "model": model, "status": GENERATING}


def interrupted_metadata(generating: dict[str, Any], *, has_text: bool) -> dict[str, Any]:
    """The metadata of a reply whose process died, from what it was stored with."""
    return {
        "provider": generating.get("provider"),
        "model": generating.get("model"),
        "status": "incomplete" if has_text else FAILED,
        "finish_reason": "error",
        "usage": None,
        "latency": {"first_token_ms": None, "total_ms": None},
        "sources": [],
        "error": INTERRUPTED,
    }


def as_assistant_error(exc: Exception, session_id: str) -> AssistantError:
    """Provider failures as they are; anything else is a bug, logged with its traceback."""
    if isinstance(exc, AssistantError):
        return exc
    logger.error("assistant crashed for session %s", session_id, exc_info=exc)
    return AssistantError(repr(exc), kind="unavailable")


def client_error(exc: AssistantError) -> ChatError:
    """The HTTP-facing error for a failed reply."""
    return AssistantTimedOut() if exc.kind == "timeout" else AssistantUnavailable()


def plain_reply_error(error: str | None) -> ChatError:
    """The error a plain request answers for its reply that ended as stored with `error`
    (not complete): the one it answered when the reply ended (app/replies/generation.py)."""
    if error == SHUTDOWN:
        return ShuttingDown()
    return AssistantTimedOut() if error == "timeout" else AssistantUnavailable()
