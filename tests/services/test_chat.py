"""The chat use cases against a real database (each test runs on SQLite and PostgreSQL)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from app.assistants import AssistantError
from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.errors import AssistantTimedOut, AssistantUnavailable, SessionNotFound
from app.kit.text import UNTITLED, make_preview, make_title
from app.messages import queries as message_queries
from app.messages import service as message_service
from app.messages.schemas import ChatRequest
from app.replies.generation import ReplyTasks
from app.sessions import queries as session_queries
from app.sessions import service as session_service
from tests.services.helpers import FailingAssistant, RecordingAssistant, message_rows, session_row

OPEN = Caller.open_mode()

ECHO = EchoAssistant()


async def send(db: Database, message: str, **fields: str) -> str:
    response = await message_service.process_chat(
        db,
        ECHO,
        OPEN,
        ChatRequest(message=message, **fields),
        history_max_messages=50,
        tasks=ReplyTasks(),
    )
    return response.session_id


async def test_first_message_creates_the_session_with_its_metadata(database: Database) -> None:
    response = await message_service.process_chat(
        database,
        ECHO,
        OPEN,
        ChatRequest(message="  What payment\n processors do you support?  ", user_id="u1"),
        history_max_messages=50,
        tasks=ReplyTasks(),
    )

    uuid.UUID(response.session_id)  # the server made a UUID
    session = await session_row(database, response.session_id)
    messages = await message_rows(database, response.session_id)
    assert [(m["seq"], m["role"]) for m in messages] == [(1, "user"), (2, "assistant")]
    assert messages[1]["content"] == response.response
    assert messages[1]["id"] == response.message_id
    assert messages[1]["metadata"]["provider"] == "echo"
    assert session["user_id"] == "u1"
    assert session["message_count"] == 2
    assert session["title"] == "What payment processors do you support?"
    assert session["last_message"] == make_preview(response.response)
    assert session["created_at"].tzinfo is not None
    assert session["updated_at"] == messages[-1]["created_at"]


async def test_continuing_keeps_the_title_and_moves_last_message(database: Database) -> None:
    session_id = await send(database, "first question")
    second = await message_service.process_chat(
        database,
        ECHO,
        OPEN,
        ChatRequest(message="second question", session_id=session_id),
        history_max_messages=50,
        tasks=ReplyTasks(),
    )

    session = await session_row(database, session_id)
    assert session["message_count"] == 4
    assert session["title"] == "first question"
    assert session["last_message"] == make_preview(second.response)
    assert [m["seq"] for m in await message_rows(database, session_id)] == [1, 2, 3, 4]


async def test_a_client_chosen_id_that_does_not_exist_is_created(database: Database) -> None:
    session_id = await send(database, "hello", session_id="my-chat_1")
    assert session_id == "my-chat_1"
    assert (await session_row(database, "my-chat_1"))["message_count"] == 2


async def test_the_assistant_gets_the_recent_history_oldest_first(database: Database) -> None:
    assistant = RecordingAssistant()
    request = ChatRequest(message="one", session_id="s")
    for text in ["one", "two", "three"]:
        request = ChatRequest(message=text, session_id="s")
        await message_service.process_chat(
            database, assistant, OPEN, request, history_max_messages=4, tasks=ReplyTasks()
        )

    last_history = assistant.histories[-1]
    # 5 messages exist before the reply; the newest 4 are sent, ending with the new message.
    assert [(t.role, t.content) for t in last_history] == [
        ("assistant", "reply 1"),
        ("user", "two"),
        ("assistant", "reply 2"),
        ("user", "three"),
    ]


async def test_assistant_failure_keeps_the_users_message_and_records_the_failure(
    database: Database,
) -> None:
    with pytest.raises(AssistantUnavailable):
        await message_service.process_chat(
            database,
            FailingAssistant(),
            OPEN,
            ChatRequest(message="are you there?", session_id="down"),
            history_max_messages=50,
            tasks=ReplyTasks(),
        )

    session = await session_row(database, "down")
    messages = await message_rows(database, "down")
    assert session["message_count"] == 2
    assert session["last_message"] == "are you there?"
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "are you there?"),
        ("assistant", ""),
    ]
    assert messages[1]["metadata"]["status"] == "failed"
    assert messages[1]["metadata"]["error"] == "unavailable"


async def test_assistant_timeout_is_a_504_error(database: Database) -> None:
    with pytest.raises(AssistantTimedOut):
        await message_service.process_chat(
            database,
            FailingAssistant(error=AssistantError("too slow", kind="timeout")),
            OPEN,
            ChatRequest(message="hello?", session_id="slow"),
            history_max_messages=50,
            tasks=ReplyTasks(),
        )
    assert (await message_rows(database, "slow"))[1]["metadata"]["error"] == "timeout"


async def test_failed_replies_are_left_out_of_the_history(database: Database) -> None:
    with pytest.raises(AssistantUnavailable):
        await message_service.process_chat(
            database,
            FailingAssistant(),
            OPEN,
            ChatRequest(message="first", session_id="s"),
            history_max_messages=50,
            tasks=ReplyTasks(),
        )
    assistant = RecordingAssistant()

    await message_service.process_chat(
        database,
        assistant,
        OPEN,
        ChatRequest(message="second", session_id="s"),
        history_max_messages=50,
        tasks=ReplyTasks(),
    )

    assert [(t.role, t.content) for t in assistant.histories[0]] == [
        ("user", "first"),
        ("user", "second"),
    ]


async def test_saving_into_a_missing_session_fails_and_writes_nothing(database: Database) -> None:
    with pytest.raises(SessionNotFound):
        await message_service.save_message(
            database, session_id="ghost", role="assistant", content="x", metadata={}
        )
    listing = await session_service.get_sessions_list(
        database, OPEN, page=1, page_size=10, user_id=None
    )
    assert listing.total == 0


async def test_message_and_metadata_commit_together_or_not_at_all(database: Database) -> None:
    session_id = await send(database, "hello")
    before = await session_row(database, session_id)

    # The message INSERT violates the role check; the metadata is not written either.
    with pytest.raises(IntegrityError):
        async with database.write() as conn:
            await message_queries.append_message(
                conn,
                session_id=session_id,
                role="robot",  # type: ignore[arg-type]
                content="never stored",
                metadata={},
                title=None,
                preview="never stored",
                now=datetime.now(UTC),
            )

    assert await session_row(database, session_id) == before
    assert len(await message_rows(database, session_id)) == 2


async def test_list_is_newest_activity_first_and_paginated(database: Database) -> None:
    ids = [await send(database, f"chat {n}") for n in range(7)]
    await send(database, "back to the first one", session_id=ids[0])
    expected_order = [ids[0], *reversed(ids[1:])]

    pages = [
        await session_service.get_sessions_list(
            database, OPEN, page=page, page_size=3, user_id=None
        )
        for page in (1, 2, 3, 4)
    ]

    assert [s.session_id for p in pages for s in p.sessions] == expected_order
    assert [len(p.sessions) for p in pages] == [3, 3, 1, 0]
    assert all(p.total == 7 and p.total_pages == 3 and p.page_size == 3 for p in pages)
    assert [p.page for p in pages] == [1, 2, 3, 4]
    top = pages[0].sessions[0]
    assert top.title == "chat 0"
    assert top.message_count == 4


async def test_list_filters_by_user(database: Database) -> None:
    await send(database, "mine", user_id="alice")
    await send(database, "also mine", user_id="alice")
    await send(database, "theirs", user_id="bob")
    await send(database, "nobody's")

    alice = await session_service.get_sessions_list(
        database, OPEN, page=1, page_size=50, user_id="alice"
    )
    everyone = await session_service.get_sessions_list(
        database, OPEN, page=1, page_size=50, user_id=None
    )

    assert sorted(s.title for s in alice.sessions) == ["also mine", "mine"]
    assert alice.total == 2
    assert everyone.total == 4


async def test_empty_list_has_zero_pages(database: Database) -> None:
    listing = await session_service.get_sessions_list(
        database, OPEN, page=1, page_size=50, user_id=None
    )
    assert (listing.sessions, listing.total, listing.total_pages) == ([], 0, 0)


async def test_equal_timestamps_have_a_stable_total_order(database: Database) -> None:
    same_time = datetime(2025, 11, 3, 10, 30, tzinfo=UTC)
    async with database.write() as conn:
        for n in range(9):
            await session_queries.create_session_if_absent(
                conn, session_id=f"tie-{n}", user_id=None, now=same_time
            )
    page_ids: list[str] = []
    for page in (1, 2, 3):
        listing = await session_service.get_sessions_list(
            database, OPEN, page=page, page_size=3, user_id=None
        )
        page_ids.extend(s.session_id for s in listing.sessions)
    again = await session_service.get_sessions_list(
        database, OPEN, page=1, page_size=9, user_id=None
    )

    assert sorted(page_ids) == [f"tie-{n}" for n in range(9)]  # none repeated, none skipped
    assert page_ids == [s.session_id for s in again.sessions]


async def test_a_session_without_user_messages_lists_with_placeholders(database: Database) -> None:
    async with database.write() as conn:
        await session_queries.create_session_if_absent(
            conn, session_id="empty", user_id=None, now=datetime.now(UTC)
        )
    listing = await session_service.get_sessions_list(
        database, OPEN, page=1, page_size=50, user_id=None
    )
    assert (listing.sessions[0].title, listing.sessions[0].last_message) == (
        UNTITLED,
        "",
    )


async def test_get_session_returns_messages_oldest_first(database: Database) -> None:
    session_id = await send(database, "one")
    await send(database, "two", session_id=session_id)

    detail = await session_service.get_session(database, OPEN, session_id)

    assert [m.role for m in detail.messages] == ["user", "assistant", "user", "assistant"]
    assert [m.content for m in detail.messages][::2] == ["one", "two"]
    assert detail.message_count == 4
    assert detail.title == make_title("one")


async def test_get_missing_session_raises(database: Database) -> None:
    with pytest.raises(SessionNotFound):
        await session_service.get_session(database, OPEN, "nope")


async def test_delete_removes_the_session_and_its_messages(database: Database) -> None:
    session_id = await send(database, "to be deleted")
    kept = await send(database, "to be kept")

    await session_service.delete_session(database, OPEN, session_id)

    with pytest.raises(SessionNotFound):
        await session_service.get_session(database, OPEN, session_id)
    assert await message_rows(database, session_id) == []
    assert len(await message_rows(database, kept)) == 2
    with pytest.raises(SessionNotFound):
        await session_service.delete_session(database, OPEN, session_id)


async def test_updated_at_never_moves_backwards(database: Database) -> None:
    session_id = await send(database, "hello")
    latest = (await session_row(database, session_id))["updated_at"]
    async with database.write() as conn:
        await message_queries.append_message(
            conn,
            session_id=session_id,
            role="assistant",
            content="from a replica with a slow clock",
            metadata={},
            title=None,
            preview="from a replica with a slow clock",
            now=latest - timedelta(seconds=5),
        )
    session = await session_row(database, session_id)
    assert session["updated_at"] == latest
    assert session["message_count"] == 3
