"""The interface every assistant provider implements."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation as the assistant sees it."""

    role: Literal["user", "assistant", "system"]
    content: str


@dataclass(frozen=True, slots=True)
class Reply:
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)


class AssistantError(Exception):
    """The provider could not produce a reply."""


class Assistant(Protocol):
    """Answers a conversation, whole or as a stream of text deltas.

    `history` is oldest first and ends with the user's newest message.
    """

    @property
    def metadata(self) -> dict[str, Any]:
        """What to record with each reply about who produced it (provider, model)."""
        ...

    async def reply(self, history: Sequence[Turn]) -> Reply: ...

    def stream(self, history: Sequence[Turn]) -> AsyncIterator[str]: ...
