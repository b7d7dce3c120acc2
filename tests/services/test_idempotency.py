"""Idempotency keys below HTTP, on both databases: the primary key decides between requests
with the same key, not a lookup before the write, and the request that loses stores nothing."""

import asyncio
import uuid

import pytest

from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.idempotency.keys import IdempotencyKey, KeyTaken
from app.kit.db.engine import Database
from app.messages import service as message_service
from app.messages.schemas import ChatRequest
from app.replies.generation import ReplyStart, ReplyTasks
from tests.services.helpers import message_rows

OPEN = Caller.open_mode()


def key_of(request: ChatRequest) -> IdempotencyKey:
    key = IdempotencyKey.of("k", 24, "chat", request.model_dump(mode="json"))
    assert key is not None
    return key


async def accept(database: Database, request: ChatRequest, tasks: ReplyTasks) -> uuid.UUID:
    """The write of a keyed request, without the lookup that comes first on the routes."""
    accepted = await message_service.accept_user_message(
        database,
        OPEN,
        request,
        history_max_messages=50,
        reply_start=ReplyStart.of(EchoAssistant(), tasks, key_of(request)),
    )
    return accepted.message.id


async def test_a_taken_key_rolls_the_whole_write_back(database: Database) -> None:
    request = ChatRequest(message="Hello", session_id="s")
    tasks = ReplyTasks()
    first = await accept(database, request, tasks)

    with pytest.raises(KeyTaken) as taken:
        await accept(database, request, tasks)

    assert taken.value.owner == ""  # NO_OWNER: open mode without a user
    assert [row["id"] for row in await message_rows(database, "s")][:1] == [first]
    assert len(await message_rows(database, "s")) == 2
    earlier = await key_of(request).earlier(database, taken.value.owner)
    assert earlier is not None
    assert earlier.question_id == first


async def test_of_writes_with_the_same_key_at_once_one_commits(database: Database) -> None:
    # New sessions each (no session_id would be a random one each): nothing else to collide on.
    requests = [ChatRequest(message="Hello", session_id=f"s{n}") for n in range(4)]
    same_key = key_of(requests[0])
    tasks = ReplyTasks()

    async def write(request: ChatRequest) -> uuid.UUID:
        accepted = await message_service.accept_user_message(
            database,
            OPEN,
            request,
            history_max_messages=50,
            reply_start=ReplyStart.of(EchoAssistant(), tasks, same_key),
        )
        return accepted.message.id

    outcomes = await asyncio.gather(*(write(r) for r in requests), return_exceptions=True)

    assert sum(isinstance(outcome, uuid.UUID) for outcome in outcomes) == 1, outcomes
    assert sum(isinstance(outcome, KeyTaken) for outcome in outcomes) == 3, outcomes
    stored = [len(await message_rows(database, f"s{n}")) for n in range(4)]
    assert sorted(stored) == [0, 0, 0, 2]
