"""The message tree underneath sessions (issue 13, phase 1), on both databases: appends make one
branch, reads and the assistant's history follow the current branch, a fork built by hand (as
edits will make them) stays beside it, replies are stored under the message they answer."""

import json
import uuid

import pytest

from app.assistants import Assistant
from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.errors import MessageNotFound, NotAUserMessage, SessionNotFound
from app.kit.text import make_preview
from app.messages import service as message_service
from app.messages.schemas import ChatRequest, ChatResponse
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


async def edit(
    db: Database,
    edit_of: uuid.UUID,
    message: str,
    *,
    caller: Caller = OPEN,
    session_id: str = "s",
    assistant: Assistant | None = None,
) -> ChatResponse:
    return await message_service.process_chat(
        db,
        assistant or EchoAssistant(),
        caller,
        ChatRequest(message=message, session_id=session_id, edit_of=edit_of),
        history_max_messages=50,
        tasks=ReplyTasks(),
    )


async def test_an_edit_is_a_sibling_whose_branch_becomes_current(database: Database) -> None:
    assistant = RecordingAssistant()
    await send(database, "one", assistant=assistant)
    await send(database, "two", assistant=assistant)
    original = await message_rows(database, "s")
    title = (await session_row(database, "s"))["title"]

    response = await edit(database, original[2]["id"], "two, edited", assistant=assistant)

    # The model sees the edit's branch: the original "two" and its reply are not in it.
    assert [t.content for t in assistant.histories[-1]] == ["one", "reply 1", "two, edited"]
    detail = await session_service.get_session(database, OPEN, "s")
    assert [m.content for m in detail.messages] == ["one", "reply 1", "two, edited", "reply 3"]
    assert detail.messages[2].id == response.user_message_id
    assert detail.messages[3].id == response.message_id
    assert detail.messages[2].sibling_ids == [original[2]["id"], response.user_message_id]
    assert detail.messages[2].parent_id == original[1]["id"]
    assert detail.message_count == 4
    assert detail.last_message == "reply 3"
    assert detail.title == title
    # Everything stays stored.
    assert [m["id"] for m in await message_rows(database, "s")][:4] == [m["id"] for m in original]
    session = await session_row(database, "s")
    assert session["node_count"] == 6
    branch = await assert_tree_matches_session(database, "s")
    assert branch[-1]["id"] == response.message_id


async def test_an_edit_of_a_first_message_is_a_new_first_message(database: Database) -> None:
    await send(database, "one")
    original = await message_rows(database, "s")
    title = (await session_row(database, "s"))["title"]

    response = await edit(database, original[0]["id"], "one, edited")

    detail = await session_service.get_session(database, OPEN, "s")
    edited, reply = (m.content for m in detail.messages)
    assert edited == "one, edited"
    assert 'You said: "one, edited". I can see 1 of your messages' in reply
    assert detail.messages[0].parent_id is None
    assert detail.messages[0].sibling_ids == [original[0]["id"], response.user_message_id]
    assert detail.message_count == 2
    assert detail.title == title
    await assert_tree_matches_session(database, "s")
    # The newest first message is the remembered one: nothing to write.
    assert (await session_row(database, "s"))["chosen_root_id"] is None


async def test_an_edit_off_the_current_branch_remembers_the_choices_above_it(
    database: Database,
) -> None:
    for text in ("one", "two", "three"):
        await send(database, text)
    q1, r1, q2, r2, q3, _ = await message_rows(database, "s")
    [other] = await fork(database, "s", 2, ["two, elsewhere"])  # the newest child of r1
    await make_current(database, "s", other)

    response = await edit(database, q3["id"], "three, edited")

    branch = await assert_tree_matches_session(database, "s")
    ids = [q1["id"], r1["id"], q2["id"], r2["id"], response.user_message_id]
    assert [m["id"] for m in branch][:5] == ids
    rows = {m["id"]: m for m in await message_rows(database, "s")}
    # At r1 the newest child is another branch: the choice is written. At r2 the edit is the
    # newest child already: nothing written.
    assert rows[r1["id"]]["chosen_child_id"] == q2["id"]
    assert rows[r2["id"]]["chosen_child_id"] is None
    assert rows[q1["id"]]["chosen_child_id"] is None


async def test_a_bad_edit_changes_nothing(database: Database) -> None:
    await send(database, "one")
    await send(database, "elsewhere", session_id="other")
    user, reply = await message_rows(database, "s")
    [elsewhere, _] = await message_rows(database, "other")
    before = (await message_rows(database, "s"), await session_row(database, "s"))

    with pytest.raises(NotAUserMessage):
        await edit(database, reply["id"], "a reply is not edited")
    for unknown in (uuid.uuid4(), elsewhere["id"]):
        with pytest.raises(MessageNotFound):
            await edit(database, unknown, "no such message here")
    with pytest.raises(SessionNotFound):
        await edit(database, user["id"], "not yours", caller=Caller.user("mallory"))
    with pytest.raises(SessionNotFound):
        await edit(database, user["id"], "no session", session_id="missing")
    with pytest.raises(SessionNotFound):  # none named: a new session would not have it
        await message_service.accept_user_message(
            database,
            OPEN,
            ChatRequest(message="where?", edit_of=user["id"]),
            history_max_messages=5,
        )

    assert (await message_rows(database, "s"), await session_row(database, "s")) == before
    assert (await session_service.get_sessions_list(database, OPEN, user_id=None)).total == 2
