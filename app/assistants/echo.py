"""An offline, deterministic assistant that restates the user's message (for tests and demos)."""

import asyncio
from collections.abc import AsyncIterator, Sequence

import regex

from app.assistants.base import Reply, ReplyEnd, ReplyEvent, TextDelta, Turn, collect

WORDS_WITH_TRAILING_SPACE = regex.compile(r"\s*\S+\s*")


class EchoAssistant:
    """Answers by restating the user's message; streams it word by word."""

    provider = "echo"
    model = "echo-1"

    def __init__(self, chunk_delay_seconds: float = 0.0) -> None:
        self._chunk_delay_seconds = chunk_delay_seconds

    def compose(self, history: Sequence[Turn]) -> str:
        user_turns = [turn for turn in history if turn.role == "user"]
        if not user_turns:
            return "Hello! Send me a message and I will echo it back."
        quoted = user_turns[-1].content.strip()
        return (
            f'You said: "{quoted}". '
            f"I can see {len(user_turns)} of your messages in this conversation. "
            "(This is the offline echo assistant; configure a model provider for real answers.)"
        )

    async def reply(self, history: Sequence[Turn]) -> Reply:
        return await collect(self.stream(history))

    async def aclose(self) -> None:
        """Nothing to release: it holds no connection."""

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        for chunk in WORDS_WITH_TRAILING_SPACE.findall(self.compose(history)):
            if self._chunk_delay_seconds:
                await asyncio.sleep(self._chunk_delay_seconds)
            yield TextDelta(chunk)
        yield ReplyEnd(model=self.model)
