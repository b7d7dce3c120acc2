"""Test assistants and small helpers shared by the service tests."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select

from app.assistants import AssistantError, Reply, ReplyEnd, ReplyEvent, TextDelta, Turn
from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.db.tables import chat_messages, chat_sessions
from app.kit.db.types import utc_now
from app.kit.text import make_preview
from app.messages import queries as message_queries
from app.messages import tree


class RecordingAssistant:
    """Answers "reply N" and remembers the history of every call."""

    provider = "recording"
    model = "recorder"

    def __init__(self) -> None:
        self.histories: list[list[Turn]] = []

    async def aclose(self) -> None:
        """Holds nothing open."""

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

    async def aclose(self) -> None:
        """Holds nothing open."""

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

    async def aclose(self) -> None:
        """Holds nothing open."""

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
    """Every message of the session, of every branch, in the order they were written; every
    column but `user_id`, so that it reads databases before migration 0013 too (the migration
    tests; tests/api/test_user_id_everywhere.py checks `user_id`)."""
    columns = [column for column in chat_messages.c if column.name != "user_id"]
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(*columns)
                .where(chat_messages.c.session_id == session_id)
                .order_by(chat_messages.c.ordinal)
            )
        ).mappings()
        return [dict(row) for row in rows]


def expected_branch_previews(branch: list[dict[str, Any]]) -> list[str | None]:
    """The write path's branch_preview along a branch: the last text's preview so far."""
    previews: list[str | None] = []
    preview: str | None = None
    for message in branch:
        if message["content"].strip():
            preview = make_preview(message["content"])
        previews.append(preview)
    return previews


async def assert_tree_matches_session(db: Database, session_id: str) -> list[dict[str, Any]]:
    """The tree's invariants, read back from the tables; the current branch, oldest first.

    Ordinals 1..n (node_count n); each message's seq is its parent's + 1; the current branch
    is a path from a first message to `current_leaf_id`, whose length is message_count and
    whose previews are the write path's; last_message is its last text's preview; times
    never go backwards, along the branch nor along ordinals, and updated_at is the newest.
    """
    session = await session_row(db, session_id)
    messages = await message_rows(db, session_id)
    by_id = {m["id"]: m for m in messages}
    assert [m["ordinal"] for m in messages] == list(range(1, len(messages) + 1))
    assert session["node_count"] == len(messages)
    for message in messages:
        parent = by_id.get(message["parent_id"])
        assert message["seq"] == (parent["seq"] + 1 if parent else 1), message
        assert parent is None or parent["ordinal"] < message["ordinal"]
    branch: list[dict[str, Any]] = []
    at = by_id.get(session["current_leaf_id"])
    while at is not None:
        branch.append(at)
        at = by_id.get(at["parent_id"])
    branch.reverse()
    assert (branch[0]["parent_id"] if branch else None) is None
    assert [m["seq"] for m in branch] == list(range(1, len(branch) + 1))
    assert session["message_count"] == len(branch)
    assert [m["branch_preview"] for m in branch] == expected_branch_previews(branch)
    assert session["last_message"] == (branch[-1]["branch_preview"] if branch else None)
    for path in (branch, messages):
        times = [m["created_at"] for m in path]
        assert times == sorted(times), "created_at goes backwards"
    if messages:
        assert session["updated_at"] == messages[-1]["created_at"]
    return branch


async def current_branch(database: Database, session_id: str) -> list[dict[str, Any]]:
    """The current branch's message rows, oldest first, walked in Python from the leaf."""
    session = await session_row(database, session_id)
    by_id = {m["id"]: m for m in await message_rows(database, session_id)}
    branch = []
    at = by_id.get(session["current_leaf_id"])
    while at is not None:
        branch.append(at)
        at = by_id.get(at["parent_id"])
    branch.reverse()
    return branch


async def fork(
    database: Database, session_id: str, parent_seq: int, contents: list[str]
) -> list[uuid.UUID]:
    """Messages stored under the current branch's message of seq `parent_seq`, one below the
    other, beside the current branch (as edits will be, phase 2), through the write path's
    explicit parent; their ids."""
    parent_id = (await current_branch(database, session_id))[parent_seq - 1]["id"]
    ids: list[uuid.UUID] = []
    async with database.write() as conn:
        for content in contents:
            stored = await message_queries.append_message(
                conn,
                session_id=session_id,
                role="user",
                content=content,
                metadata={},
                title=None,
                preview=make_preview(content),
                now=utc_now(),
                parent_id=parent_id,
            )
            assert stored is not None
            assert not stored.ends_branch
            ids.append(stored.id)
            parent_id = stored.id
    return ids


async def make_current(database: Database, session_id: str, leaf_id: Any) -> None:
    """PUT /branch: the branch ending at `leaf_id` becomes current."""
    await tree.switch_branch(database, Caller.open_mode(), session_id, leaf_id)


def branch_by_choices(session: dict[str, Any], messages: list[dict[str, Any]]) -> list[Any]:
    """The ids of the branch that the remembered choices lead to from the top (a fork without
    one: its newest child), walked in Python: what the server must find on a switch to the
    first message."""
    by_id = {m["id"]: m for m in messages}
    children: dict[Any, list[Any]] = {}
    for message in messages:  # in ordinal order: the newest child last
        children.setdefault(message["parent_id"], []).append(message["id"])
    path: list[Any] = []
    parent, chosen = None, session["chosen_root_id"]
    while children.get(parent):
        parent = chosen or children[parent][-1]
        path.append(parent)
        chosen = by_id[parent]["chosen_child_id"]
    return path
