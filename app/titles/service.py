"""Titles written by the model: beside a session's first reply, and on demand.

The title of a new session is the seed's (its first message, cut) until the model's is
written; the model is asked when the first message is stored, beside the reply and never in
front of it. Whatever goes wrong (a timeout, an error, an answer without a title) leaves the
seed's title. A title the user set is never replaced by one written beside a reply
(app/titles/queries.py), and stopping the reply stops its title too.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.errors import (
    ChatError,
    NothingToTitle,
    SessionNotFound,
    TitlesNotWritten,
)
from app.kit.text import make_title
from app.messages import queries as message_queries
from app.replies.metadata import FAILED, GENERATING
from app.sessions import queries as session_queries
from app.sessions.schemas import SessionSummary
from app.sessions.service import with_tags
from app.titles import queries
from app.titles.writer import TitleWriter

logger = logging.getLogger(__name__)

# Called with the title once it is written (a stream still open sends it as `event: title`).
OnTitle = Callable[[str], None]


class TitleTasks:
    """The titles being written beside first replies in this process, by session, so that a
    stop cancels its session's and shutdown all of them.

    A task can be cancelled only while it waits for the model: once the title is there, its
    short write is left to finish, as a reply's final write is.
    """

    def __init__(self, writer: TitleWriter | None) -> None:
        self.writer = writer
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._tasks: set[asyncio.Task[None]] = set()
        self._asking: dict[str, set[asyncio.Task[None]]] = {}

    def begin(
        self,
        db: Database,
        session_id: str,
        *,
        ordinal: int,
        question: str,
        on_title: OnTitle | None = None,
    ) -> None:
        """Ask for the title of a session whose message `question`, of `ordinal`, was just
        stored: only its first message (ordinal 1, which no edit has) starts a title."""
        if self.writer is None or ordinal != 1:
            return
        task = asyncio.create_task(self._write(self.writer, db, session_id, question, on_title))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._asking.setdefault(session_id, set()).add(task)
        task.add_done_callback(lambda done: self._answered(session_id, done))

    def __len__(self) -> int:
        return len(self._tasks)

    def _answered(self, session_id: str, task: asyncio.Task[Any]) -> None:
        """The task waits for the model no more: a stop leaves it alone."""
        asking = self._asking.get(session_id)
        if asking is None:
            return
        asking.discard(task)
        if not asking:
            del self._asking[session_id]

    async def _write(
        self,
        writer: TitleWriter,
        db: Database,
        session_id: str,
        question: str,
        on_title: OnTitle | None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            title = await writer.write(question)
        except ChatError:
            return  # logged by the writer; the seed's title stands
        except Exception:
            logger.exception("asking for the title failed for session %s", session_id)
            return
        finally:
            self._answered(session_id, task)
        try:
            async with db.write() as conn:
                written = await queries.write_model_title(
                    conn, session_id, title, over=(make_title(question), "message")
                )
        except Exception:
            logger.exception("writing the model's title failed for session %s", session_id)
            return
        if written and on_title is not None:
            on_title(title)

    async def cancel(self, session_id: str) -> int:
        """Stop asking for the session's title; returns once those tasks are over."""
        asking = self._asking.pop(session_id, set())
        return await self._cancel(asking)

    async def shutdown(self) -> None:
        """Stop asking for every title; let the titles already there be written."""
        asking = {task for tasks in self._asking.values() for task in tasks}
        self._asking.clear()
        if asking:
            logger.info("cancelling %d title requests", len(asking))
        await self._cancel(asking)
        await self.wait_idle()

    async def _cancel(self, tasks: set[asyncio.Task[None]]) -> int:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        return len(tasks)

    async def wait_idle(self) -> None:
        """Wait until no title is being asked for or written."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))


async def write_title_now(
    db: Database, titles: TitleTasks, caller: Caller, session_id: str
) -> SessionSummary:
    """Ask the model for a new title from the current branch's first exchange, and answer the
    session's summary.

    Asked for explicitly, it may replace the user's title; but a title set while it is being
    written wins (compare-and-set on the title read at the start), and the summary then shows
    that one.
    """
    async with db.read() as conn:
        summary = await session_queries.get_session_summary(
            conn, session_id, owner=caller.owner_filter
        )
        if summary is None:
            raise SessionNotFound()
        if titles.writer is None:
            raise TitlesNotWritten()
        current = await queries.read_title(conn, session_id)
        opening = await message_queries.list_messages(
            conn,
            session_id,
            branch_length=summary["message_count"],
            before=_OPENING_MESSAGES + 1,
            limit=_OPENING_MESSAGES,
        )
    if current is None:
        raise SessionNotFound()  # deleted between the two reads
    question, reply = _first_exchange(opening)
    if question is None:
        raise NothingToTitle()
    title = await titles.writer.write(question, reply)
    async with db.write() as conn:
        await queries.write_model_title(conn, session_id, title, over=current)
        written = await session_queries.get_session_summary(conn, session_id)
        if written is None:
            raise SessionNotFound()  # deleted meanwhile
        [tagged] = await with_tags(conn, [written])
    return SessionSummary.model_validate(tagged)


# The first exchange is among the branch's first few messages (a system message may precede
# it in sessions written before the tree).
_OPENING_MESSAGES = 4


def _first_exchange(messages: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The first user message's text and the text of the reply to it (None: none has text;
    not the reply to a later message)."""
    question = next((m for m in messages if m["role"] == "user"), None)
    if question is None:
        return None, None
    reply = next(
        (
            m["content"]
            for m in messages
            if m["role"] == "assistant"
            and m["parent_id"] == question["id"]
            and m["content"].strip()
            and m["metadata"].get("status") not in (FAILED, GENERATING)
        ),
        None,
    )
    return question["content"], reply
