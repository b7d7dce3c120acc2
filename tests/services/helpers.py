"""Test assistants and small helpers shared by the service tests."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select

from app.assistants import AssistantError, Reply, ReplyEnd, ReplyEvent, TextDelta, Turn
from app.kit.db.engine import Database
from app.kit.db.tables import chat_messages, chat_sessions


class RecordingAssistant:
    """Answers "reply N" and remembers the history of every call."""

    provider = "recording"
    model = "recorder"

    def __init__(self) -> None:
        self.histories: list[list[Turn]] = []

    async def reply(self, history: Sequence[Turn]) -> Reply:
        self.histories.append(list(history))
        return Reply(content=f"reply {len(self.histories)}", end=ReplyEnd(model="recorder"))

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        reply = await self.reply(history)
        yield TextDelta(reply.content)
        yield reply.end


class FailingAssistant:
    """Fails every call with `error`, after `chunks_before_failure` streamed chunks."""

    provider = "failing"
    model = "failing-1"

    def __init__(self, chunks_before_failure: int = 0, error: Exception | None = None) -> None:
        self.chunks_before_failure = chunks_before_failure
        self.error = error or AssistantError("upstream down", kind="unavailable")

    async def reply(self, history: Sequence[Turn]) -> Reply:
        raise self.error

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        for index in range(self.chunks_before_failure):
            yield TextDelta(f"part{index} ")
        raise self.error


class GatedAssistant:
    """Streams "first ", then waits for `gate` before streaming the rest."""

    provider = "gated"
    model = "gate-1"
    rest = ("second ", "third")

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def reply(self, history: Sequence[Turn]) -> Reply:
        await self.gate.wait()
        return Reply(content="first " + "".join(self.rest), end=ReplyEnd(model="gate-1"))

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        yield TextDelta("first ")
        await self.gate.wait()
        for chunk in self.rest:
            yield TextDelta(chunk)
        yield ReplyEnd(model="gate-1")


async def session_row(db: Database, session_id: str) -> dict[str, Any]:
    async with db.read() as conn:
        row = (
            (
                await conn.execute(
                    select(chat_sessions).where(chat_sessions.c.session_id == session_id)
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


async def message_rows(db: Database, session_id: str) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(chat_messages)
                .where(chat_messages.c.session_id == session_id)
                .order_by(chat_messages.c.seq)
            )
        ).mappings()
        return [dict(row) for row in rows]
