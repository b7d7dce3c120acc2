"""The message tree underneath sessions (issue 13, phase 1), on both databases: appends make one
branch, reads and the assistant's history follow the current branch, a fork built by hand (as
edits will make them) stays beside it, replies are stored under the message they answer."""

import json

from app.assistants import Assistant
from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.text import make_preview
from app.messages import service as message_service
from app.messages.schemas import ChatRequest
from app.replies.generation import Finished, ReplyTasks, generate_reply
from app.sessions import export
from app.sessions import service as session_service
from tests.services.helpers import (
    RecordingAssistant,
    assert_tree_matches_session,
    current_branch,
    fork,
    make_current,
    message_rows,
    session_row,
)

OPEN = Caller.open_mode()


async def send(
    db: Database, message: str, session_id: str = "s", assistant: Assistant | None = None
) -> None:
    await message_service.process_chat(
        db,
        assistant or EchoAssistant(),
        OPEN,
        ChatRequest(message=message, session_id=session_id),
        history_max_messages=50,
        tasks=ReplyTasks(),
    )


async def test_appends_make_one_branch_with_parents_and_sibling_ids(database: Database) -> None:
    await send(database, "one")
    await send(database, "two")

    rows = await message_rows(database, "s")
    detail = await session_service.get_session(database, OPEN, "s")
    assert [m.id for m in detail.messages] == [m["id"] for m in rows]
    assert [m.parent_id for m in detail.messages] == [None, *(m["id"] for m in rows[:-1])]
    assert [m.sibling_ids for m in detail.messages] == [[m["id"]] for m in rows]
    assert [m.seq for m in detail.messages] == [1, 2, 3, 4]
    assert detail.current_message_id == rows[-1]["id"]
    await assert_tree_matches_session(database, "s")


async def test_a_fork_stays_off_the_current_branch_and_shows_in_sibling_ids(
    database: Database,
) -> None:
    await send(database, "one")
    await send(database, "two")
    before = await session_row(database, "s")
    straight = [m["id"] for m in await message_rows(database, "s")]

    [edit] = await fork(database, "s", 2, ["two, edited"])

    detail = await session_service.get_session(database, OPEN, "s")
    assert [m.id for m in detail.messages] == straight
    assert detail.messages[2].sibling_ids == [straight[2], edit]
    assert [len(m.sibling_ids) for m in detail.messages] == [1, 1, 2, 1]
    session = await session_row(database, "s")
    assert session["node_count"] == 5
    for field in ("message_count", "last_message", "current_leaf_id"):
        assert session[field] == before[field]
    await assert_tree_matches_session(database, "s")
    # Pages of the branch: `before` and `limit` count seq on it.
    page = await session_service.get_session(database, OPEN, "s", limit=2)
    assert [m.id for m in page.messages] == straight[2:]
    assert page.messages_before == 3
    older = await session_service.get_session(database, OPEN, "s", before=3, limit=2)
    assert [m.id for m in older.messages] == straight[:2]
    assert not older.has_more_messages

    await make_current(database, "s", edit)

    detail = await session_service.get_session(database, OPEN, "s")
    assert [m.id for m in detail.messages] == [*straight[:2], edit]
    assert detail.messages[2].sibling_ids == [straight[2], edit]
    assert detail.message_count == 3
    assert detail.last_message == "two, edited"
    await assert_tree_matches_session(database, "s")


async def test_the_assistant_sees_only_the_new_messages_branch(database: Database) -> None:
    assistant = RecordingAssistant()
    await send(database, "one", assistant=assistant)
    await send(database, "two", assistant=assistant)
    [other] = await fork(database, "s", 2, ["the other branch"])

    await send(database, "three", assistant=assistant)
    assert [t.content for t in assistant.histories[-1]] == [
        "one",
        "reply 1",
        "two",
        "reply 2",
        "three",
    ]

    await make_current(database, "s", other)
    await send(database, "four", assistant=assistant)
    assert [t.content for t in assistant.histories[-1]] == [
        "one",
        "reply 1",
        "the other branch",
        "four",
    ]
    branch = await assert_tree_matches_session(database, "s")
    assert [m["content"] for m in branch] == [
        "one",
        "reply 1",
        "the other branch",
        "four",
        "reply 4",
    ]

    # At most history_max_messages, the newest of the branch.
    await message_service.process_chat(
        database,
        assistant,
        OPEN,
        ChatRequest(message="five", session_id="s"),
        history_max_messages=3,
        tasks=ReplyTasks(),
    )
    assert [t.content for t in assistant.histories[-1]] == ["four", "reply 4", "five"]


async def test_a_reply_goes_under_its_question_when_the_question_left_the_branch(
    database: Database,
) -> None:
    await send(database, "one")
    accepted = await message_service.accept_user_message(
        database, OPEN, ChatRequest(message="two", session_id="s"), history_max_messages=50
    )
    # Before its reply starts, another branch is made current (an edit, in phase 2).
    [edit] = await fork(database, "s", 2, ["two, edited"])
    await make_current(database, "s", edit)
    before = await session_row(database, "s")

    outcome = await generate_reply(
        database,
        EchoAssistant(),
        ReplyTasks(),
        session_id="s",
        question=accepted.message,
        history=accepted.history,
    )

    assert isinstance(outcome, Finished)
    reply = {m["id"]: m for m in await message_rows(database, "s")}[outcome.message_id]
    assert reply["parent_id"] == accepted.message.id
    assert reply["seq"] == accepted.message.seq + 1
    assert reply["branch_preview"] == make_preview(outcome.content)
    session = await session_row(database, "s")
    assert session["node_count"] == before["node_count"] + 1
    for field in ("message_count", "last_message", "current_leaf_id"):
        assert session[field] == before[field]
    await assert_tree_matches_session(database, "s")


async def test_a_reply_goes_at_the_branch_end_when_messages_were_sent_after_its_question(
    database: Database,
) -> None:
    """Several messages sent at once stay one straight conversation, as before the tree: a
    reply to "a" is not made a sibling of "b", a message of another role."""
    accepted = await message_service.accept_user_message(
        database, OPEN, ChatRequest(message="a", session_id="s"), history_max_messages=50
    )
    await message_service.accept_user_message(
        database, OPEN, ChatRequest(message="b", session_id="s"), history_max_messages=50
    )

    outcome = await generate_reply(
        database,
        EchoAssistant(),
        ReplyTasks(),
        session_id="s",
        question=accepted.message,
        history=accepted.history,
    )

    assert isinstance(outcome, Finished)
    branch = await assert_tree_matches_session(database, "s")
    assert [m["content"] for m in branch] == ["a", "b", outcome.content]
    assert branch[-1]["id"] == outcome.message_id
    assert branch == await message_rows(database, "s")
    assert (await session_row(database, "s"))["last_message"] == make_preview(outcome.content)


async def test_a_reply_continues_the_branch_from_its_question(database: Database) -> None:
    await send(database, "one")
    rows = await message_rows(database, "s")
    assert rows[1]["parent_id"] == rows[0]["id"]
    assert rows[1]["branch_preview"] == make_preview(rows[1]["content"])
    assert (await current_branch(database, "s")) == rows


async def test_export_carries_the_whole_tree_and_prints_the_current_branch(
    database: Database,
) -> None:
    await send(database, "one")
    [edit] = await fork(database, "s", 1, ["off the branch"])
    rows = await message_rows(database, "s")

    exported = json.loads(
        (await export.export_session(database, OPEN, "s", export_format="json")).content
    )
    assert [m["id"] for m in exported["messages"]] == [str(m["id"]) for m in rows]
    assert [m["parent_id"] for m in exported["messages"]] == [
        None if m["parent_id"] is None else str(m["parent_id"]) for m in rows
    ]
    assert exported["current_message_id"] == str(rows[1]["id"])
    assert exported["message_count"] == 2
    assert str(edit) in {m["id"] for m in exported["messages"]}

    markdown = (await export.export_session(database, OPEN, "s", export_format="markdown")).content
    assert "one" in markdown
    assert "off the branch" not in markdown


async def test_search_finds_text_on_every_branch(database: Database) -> None:
    await send(database, "one")
    await fork(database, "s", 1, ["zebra crossing ahead"])

    listing = await session_service.get_sessions_list(database, OPEN, user_id=None, query="zebra")

    assert [s.session_id for s in listing.sessions] == ["s"]
    assert listing.sessions[0].snippet == "zebra crossing ahead"
