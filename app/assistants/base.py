"""The interface every assistant provider implements, and what a reply carries."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from app.domain import Role


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation as the assistant sees it."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Source:
    """A knowledge-base passage a reply drew on."""

    title: str
    path: str
    score: float

    def as_metadata(self) -> dict[str, Any]:
        return {"title": self.title, "path": self.path, "score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_metadata(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    """How a reply ended: the last item of a stream, or the tail of a whole reply."""

    model: str
    finish_reason: str = "stop"
    usage: Usage | None = None
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    content: str
    end: ReplyEnd


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


ReplyEvent = TextDelta | ReplyEnd


class AssistantError(Exception):
    """The provider could not produce a (complete) reply. `kind` says why, for the client."""

    def __init__(self, message: str, *, kind: Literal["unavailable", "timeout"]) -> None:
        super().__init__(message)
        self.kind = kind


class Assistant(Protocol):
    """Answers a conversation, whole or as a stream.

    `history` is oldest first and ends with the user's newest message. `stream` yields text
    deltas and then exactly one `ReplyEnd`. Both raise `AssistantError` on failure.
    """

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str:
        """The configured model; a reply's `ReplyEnd` names the one that actually answered."""
        ...

    async def reply(self, history: Sequence[Turn]) -> Reply: ...

    def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]: ...

    async def aclose(self) -> None:
        """Release what it holds open (an HTTP client's connections), at shutdown."""
        ...


async def collect(events: AsyncIterator[ReplyEvent]) -> Reply:
    """A whole reply from a stream, for providers whose plain reply is their stream joined."""
    parts: list[str] = []
    end: ReplyEnd | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            end = event
    if end is None:
        raise AssistantError("the stream ended without a final event", kind="unavailable")
    return Reply(content="".join(parts), end=end)
