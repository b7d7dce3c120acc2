"""What is recorded with each assistant message: who wrote it, how it ended, what it cost."""

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from app.core.errors import AssistantTimedOut, AssistantUnavailable, ChatError
from app.services.assistant import AssistantError, ReplyEnd

ReplyStatus = Literal["complete", "incomplete", "failed"]

# Assistant messages with this status have no text: they mark a reply that never came.
FAILED = "failed"
# The error and finish reason of a reply the user stopped (POST .../stop).
STOPPED = "stopped"


@dataclass
class ReplyTimer:
    """Latency of one reply: to its first token, and in total."""

    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None

    def token_arrived(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

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


def client_error(exc: AssistantError) -> ChatError:
    """The HTTP-facing error for a failed reply."""
    return AssistantTimedOut() if exc.kind == "timeout" else AssistantUnavailable()
