"""Test assistants and small helpers shared by the service tests."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select

from app.db.engine import Database
from app.db.tables import chat_messages, chat_sessions
from app.services.assistant import Reply, Turn


class RecordingAssistant:
    """Answers "reply N" and remembers the history of every call."""

    def __init__(self) -> None:
        self.histories: list[list[Turn]] = []

    @property
    def metadata(self) -> dict[str, Any]:
        return {"provider": "recording"}

    async def reply(self, history: Sequence[Turn]) -> Reply:
        self.histories.append(list(history))
        return Reply(content=f"reply {len(self.histories)}", metadata=self.metadata)

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[str]:
        reply = await self.reply(history)
        for word in reply.content.split(" "):
            yield word + " "


class FailingAssistant:
    """Fails every call, after `chunks_before_failure` streamed chunks."""

    def __init__(self, chunks_before_failure: int = 0) -> None:
        self.chunks_before_failure = chunks_before_failure

    @property
    def metadata(self) -> dict[str, Any]:
        return {"provider": "failing"}

    async def reply(self, history: Sequence[Turn]) -> Reply:
        raise ConnectionError("upstream down")

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[str]:
        for index in range(self.chunks_before_failure):
            yield f"part{index} "
        raise ConnectionError("upstream cut the stream")


class GatedAssistant:
    """Streams "first ", then waits for `gate` before streaming the rest."""

    rest = ("second ", "third")

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    @property
    def metadata(self) -> dict[str, Any]:
        return {"provider": "gated"}

    async def reply(self, history: Sequence[Turn]) -> Reply:
        await self.gate.wait()
        return Reply(content="first " + "".join(self.rest), metadata=self.metadata)

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[str]:
        yield "first "
        await self.gate.wait()
        for chunk in self.rest:
            yield chunk


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
