"""Session metadata and the message tree stay exact with many writers on one session, on both
databases."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.config import Settings
from app.kit.db.engine import Database, create_engine
from app.kit.text import make_preview, make_title
from app.messages import service as message_service
from app.messages import tree
from app.messages.schemas import ChatRequest, ChatResponse
from app.replies.generation import ReplyStart, ReplyTasks
from app.sessions import service as session_service
from tests.services.helpers import (
    assert_tree_matches_session,
    branch_by_choices,
    fork,
    make_current,
    message_rows,
    session_row,
)

OPEN = Caller.open_mode()

WRITERS = 24
EDITORS = 16


@pytest.fixture
async def second_replica(settings: Settings) -> AsyncIterator[Database]:
    """Another engine on the same database, as a second app instance would have."""
    db = Database(create_engine(settings))
    yield db
    await db.dispose()


async def assert_metadata_matches_messages(db: Database, session_id: str) -> None:
    """Messages appended without a parent: one straight branch of them all."""
    branch = await assert_tree_matches_session(db, session_id)
    session = await session_row(db, session_id)
    messages = await message_rows(db, session_id)
    assert branch == messages, "appends without a parent made a fork"
    assert session["last_message"] == make_preview(messages[-1]["content"])
    first_user = next(m for m in messages if m["role"] == "user")
    assert session["title"] == make_title(first_user["content"])


async def test_parallel_writers_to_one_session(database: Database) -> None:
    first = await opened_session(database, "opening question")

    await asyncio.gather(
        *(
            message_service.save_message(
                database,
                session_id=first.session_id,
                role="user" if n % 2 else "assistant",
                content=f"message {n}",
                metadata={},
            )
            for n in range(WRITERS)
        )
    )

    await assert_metadata_matches_messages(database, first.session_id)
    assert (await session_row(database, first.session_id))["message_count"] == WRITERS + 2


async def test_parallel_first_messages_create_one_session(database: Database) -> None:
    await asyncio.gather(
        *(
            message_service.accept_user_message(
                database,
                OPEN,
                ChatRequest(message=f"racing opener {n}", session_id="raced"),
                history_max_messages=10,
            )
            for n in range(WRITERS)
        )
    )

    listing = await session_service.get_sessions_list(
        database, OPEN, page=1, page_size=50, user_id=None
    )
    assert listing.total == 1
    await assert_metadata_matches_messages(database, "raced")
    messages = await message_rows(database, "raced")
    assert sorted(m["content"] for m in messages) == sorted(
        f"racing opener {n}" for n in range(WRITERS)
    )


async def test_two_replicas_writing_to_one_session(
    database: Database, second_replica: Database
) -> None:
    first = await opened_session(database, "hello")

    await asyncio.gather(
        *(
            message_service.process_chat(
                replica,
                chat_assistant(),
                OPEN,
                ChatRequest(message=f"from replica {n % 2}: {n}", session_id=first.session_id),
                history_max_messages=10,
                tasks=ReplyTasks(),
            )
            for n, replica in enumerate([database, second_replica] * (WRITERS // 2))
        )
    )

    await assert_metadata_matches_messages(database, first.session_id)
    assert (await session_row(database, first.session_id))["message_count"] == 2 + 2 * WRITERS


async def test_message_times_follow_their_order_with_many_writers(
    database: Database, second_replica: Database
) -> None:
    """Each writer reads its clock before it queues for the session's row lock, so without
    the lock deciding the time, a later seq could get an earlier created_at."""
    first = await opened_session(database, "hello")

    await asyncio.gather(
        *(
            message_service.accept_user_message(
                replica,
                OPEN,
                ChatRequest(message=f"writer {n}", session_id=first.session_id),
                history_max_messages=1,
            )
            for n, replica in enumerate([database, second_replica] * (2 * WRITERS))
        )
    )

    await assert_metadata_matches_messages(database, first.session_id)


async def test_parallel_writers_continue_the_current_branch_of_a_tree(
    database: Database, second_replica: Database
) -> None:
    first = await opened_session(database, "hello")
    [other] = await fork(database, first.session_id, 1, ["hello again"])
    await make_current(database, first.session_id, other)

    await asyncio.gather(
        *(
            message_service.save_message(
                replica,
                session_id=first.session_id,
                role="user" if n % 2 else "assistant",
                content=f"message {n}" if n % 3 else "",
                metadata={},
            )
            for n, replica in enumerate([database, second_replica] * (WRITERS // 2))
        )
    )

    branch = await assert_tree_matches_session(database, first.session_id)
    assert [m["ordinal"] for m in branch] == [1, 3, *range(4, 4 + WRITERS)]
    assert (await session_row(database, first.session_id))["node_count"] == 3 + WRITERS


async def test_parallel_edits_of_one_message_all_land_as_its_siblings(
    database: Database, second_replica: Database
) -> None:
    first = await opened_session(database, "hello")
    await message_service.save_message(
        database, session_id=first.session_id, role="user", content="edit me", metadata={}
    )
    edited = (await message_rows(database, first.session_id))[-1]

    accepted = await asyncio.gather(
        *(
            message_service.accept_user_message(
                replica,
                OPEN,
                ChatRequest(message=f"edit {n}", session_id=first.session_id, edit_of=edited["id"]),
                history_max_messages=10,
            )
            for n, replica in enumerate([database, second_replica] * (EDITORS // 2))
        )
    )

    branch = await assert_tree_matches_session(database, first.session_id)
    messages = await message_rows(database, first.session_id)
    siblings = [m for m in messages if m["parent_id"] == edited["parent_id"]]
    assert {m["id"] for m in siblings} == {edited["id"], *(a.message.id for a in accepted)}
    assert len(messages) == 3 + EDITORS
    # The last edit written is the current branch's end.
    assert branch[-1]["id"] == messages[-1]["id"]
    assert len(branch) == 3


async def test_parallel_edits_regenerations_and_switches_keep_the_tree_exact(
    database: Database, second_replica: Database
) -> None:
    """Edits of one question, regenerations of its reply and switches to its old branch, all
    in flight at once over two engines: every new message lands as a sibling, and the session
    ends on a whole branch that the remembered choices lead to."""
    first = await opened_session(database, "hello")
    question = await message_service.process_chat(
        database,
        chat_assistant(),
        OPEN,
        ChatRequest(message="edit me", session_id=first.session_id),
        history_max_messages=10,
        tasks=ReplyTasks(),
    )
    session_id = first.session_id

    async def edit(replica: Database, n: int) -> ChatResponse:
        request = ChatRequest(
            message=f"edit {n}", session_id=session_id, edit_of=question.user_message_id
        )
        return await message_service.process_chat(
            replica, chat_assistant(), OPEN, request, history_max_messages=10, tasks=ReplyTasks()
        )

    async def regenerate(replica: Database) -> ChatResponse:
        assistant, tasks = chat_assistant(), ReplyTasks()
        accepted = await message_service.accept_regeneration(
            replica,
            OPEN,
            session_id,
            question.message_id,
            history_max_messages=10,
            reply_start=ReplyStart.of(assistant, tasks),
        )
        return await message_service.answer(replica, assistant, tasks, accepted)

    async def switch(replica: Database) -> None:
        await tree.switch_branch(replica, OPEN, session_id, question.message_id)

    replicas = [database, second_replica] * (EDITORS // 2)
    work = [
        edit(replica, n) if n % 3 == 0 else regenerate(replica) if n % 3 == 1 else switch(replica)
        for n, replica in enumerate(replicas)
    ]
    results = await asyncio.gather(*work)

    branch = await assert_tree_matches_session(database, session_id)
    messages = await message_rows(database, session_id)
    session = await session_row(database, session_id)
    assert [m["id"] for m in branch] == branch_by_choices(session, messages)
    replies = [r for r in results if r is not None]
    edits = [r for n, r in enumerate(results) if n % 3 == 0]
    regenerations = [r for n, r in enumerate(results) if n % 3 == 1]
    assert len(messages) == 4 + 2 * len(edits) + len(regenerations)
    by_id = {m["id"]: m for m in messages}
    for edited in edits:
        assert edited is not None
        assert by_id[edited.user_message_id]["parent_id"] == first.message_id
        assert by_id[edited.message_id]["parent_id"] == edited.user_message_id
    for regenerated in regenerations:
        assert regenerated is not None
        assert by_id[regenerated.message_id]["parent_id"] == question.user_message_id
    assert len(branch) == 4
    assert branch[-1]["id"] in {r.message_id for r in replies if r is not None} | {
        question.message_id
    }


def chat_assistant() -> EchoAssistant:
    return EchoAssistant()


async def opened_session(database: Database, message: str) -> ChatResponse:
    """A new session with one exchange: `message` and the assistant's reply."""
    return await message_service.process_chat(
        database,
        chat_assistant(),
        OPEN,
        ChatRequest(message=message),
        history_max_messages=10,
        tasks=ReplyTasks(),
    )
