"""Who may touch which session: the Caller rules, and the chat use cases enforcing them
against a real database (each test runs on SQLite and PostgreSQL)."""

from typing import Any

import pytest
from sqlalchemy import func, select

from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.db.tables import chat_messages, chat_sessions
from app.kit.errors import Forbidden, SessionNotFound
from app.messages import service as message_service
from app.messages.schemas import ChatRequest
from app.replies.generation import ReplyTasks
from app.replies.streaming import start_chat_stream
from app.sessions import service as session_service
from tests.services.helpers import message_rows, session_row

ALICE = Caller.user("alice")
BOB = Caller.user("bob")
SERVICE = Caller.service("svc")
OPEN = Caller.open_mode()

ECHO = EchoAssistant()


# --- The rules ----------------------------------------------------------------------------


def test_a_user_acts_for_themselves_only() -> None:
    assert ALICE.acting_for(None) == "alice"
    assert ALICE.acting_for("alice") == "alice"
    with pytest.raises(Forbidden):
        ALICE.acting_for("bob")
    with pytest.raises(Forbidden):
        ALICE.acting_for("")


def test_a_user_sees_only_their_own_sessions() -> None:
    assert ALICE.owner_filter == "alice"
    assert BOB.owner_filter == "bob"


@pytest.mark.parametrize("caller", [SERVICE, OPEN], ids=["service", "open-mode"])
def test_trusted_callers_act_for_whoever_they_name_and_see_everything(caller: Caller) -> None:
    assert caller.acting_for(None) is None
    assert caller.acting_for("alice") == "alice"
    assert caller.acting_for("bob") == "bob"
    assert caller.owner_filter is None


def test_a_service_caller_keeps_its_own_identity() -> None:
    assert SERVICE.user_id == "svc"
    assert SERVICE.sees_everything
    assert not ALICE.sees_everything
    assert OPEN.user_id is None


# --- Isolation in the use cases -----------------------------------------------------------


async def send(db: Database, caller: Caller, message: str, **fields: str) -> str:
    response = await message_service.process_chat(
        db,
        ECHO,
        caller,
        ChatRequest(message=message, **fields),
        history_max_messages=50,
        tasks=ReplyTasks(),
    )
    return response.session_id


async def snapshot(db: Database, session_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return await session_row(db, session_id), await message_rows(db, session_id)


async def messages_containing(db: Database, text: str) -> int:
    async with db.read() as conn:
        count = await conn.execute(
            select(func.count())
            .select_from(chat_messages)
            .where(chat_messages.c.content.contains(text))
        )
        return int(count.scalar_one())


async def session_count(db: Database) -> int:
    async with db.read() as conn:
        count = await conn.execute(select(func.count()).select_from(chat_sessions))
        return int(count.scalar_one())


async def test_bob_cannot_read_alices_session(database: Database) -> None:
    session_id = await send(database, ALICE, "alice's secret plans")

    with pytest.raises(SessionNotFound):
        await session_service.get_session(database, BOB, session_id)
    assert (await session_service.get_session(database, ALICE, session_id)).message_count == 2


@pytest.mark.parametrize("user_id", [None, "bob"], ids=["no-user-id", "user-id-bob"])
async def test_bob_cannot_continue_alices_session(database: Database, user_id: str | None) -> None:
    session_id = await send(database, ALICE, "alice's secret plans")
    before = await snapshot(database, session_id)
    fields = {"user_id": user_id} if user_id else {}

    with pytest.raises(SessionNotFound):
        await send(database, BOB, "bob was here", session_id=session_id, **fields)

    assert await snapshot(database, session_id) == before
    assert before[0]["message_count"] == 2
    assert await messages_containing(database, "bob was here") == 0


async def test_bob_cannot_continue_alices_session_by_stream(database: Database) -> None:
    session_id = await send(database, ALICE, "alice's secret plans")
    before = await snapshot(database, session_id)
    tasks = ReplyTasks()

    with pytest.raises(SessionNotFound):
        await start_chat_stream(
            database,
            ECHO,
            tasks,
            BOB,
            ChatRequest(message="bob was here", session_id=session_id),
            history_max_messages=50,
        )

    assert len(tasks) == 0  # no reply is being generated
    assert await snapshot(database, session_id) == before
    assert await messages_containing(database, "bob was here") == 0


async def test_bob_cannot_create_a_session_under_an_id_alice_chose(database: Database) -> None:
    await send(database, ALICE, "alice's secret plans", session_id="kickoff")
    before = await snapshot(database, "kickoff")

    with pytest.raises(SessionNotFound):
        await send(database, BOB, "bob was here", session_id="kickoff")

    assert await snapshot(database, "kickoff") == before
    assert before[0]["user_id"] == "alice"
    assert await session_count(database) == 1
    assert await messages_containing(database, "bob was here") == 0


async def test_bob_cannot_delete_alices_session(database: Database) -> None:
    session_id = await send(database, ALICE, "alice's secret plans")
    before = await snapshot(database, session_id)

    with pytest.raises(SessionNotFound):
        await session_service.delete_session(database, BOB, session_id)

    assert await snapshot(database, session_id) == before


async def test_someone_elses_session_is_indistinguishable_from_a_missing_one(
    database: Database,
) -> None:
    session_id = await send(database, ALICE, "alice's secret plans")

    with pytest.raises(SessionNotFound) as not_hers:
        await session_service.get_session(database, BOB, session_id)
    with pytest.raises(SessionNotFound) as missing:
        await session_service.get_session(database, BOB, "no-such-session")

    assert str(not_hers.value) == str(missing.value)
    assert not_hers.value.detail == missing.value.detail


async def test_users_list_only_their_own_sessions(database: Database) -> None:
    alices = {await send(database, ALICE, f"alice {index}") for index in range(2)}
    bobs = {await send(database, BOB, "bob 0")}

    for caller, own in ((ALICE, alices), (BOB, bobs)):
        listed = await session_service.get_sessions_list(
            database, caller, page=1, page_size=50, user_id=None
        )
        assert {summary.session_id for summary in listed.sessions} == own
        assert listed.total == len(own)


async def test_a_user_naming_another_user_is_forbidden(database: Database) -> None:
    await send(database, ALICE, "alice's secret plans")

    with pytest.raises(Forbidden):
        await session_service.get_sessions_list(
            database, BOB, page=1, page_size=50, user_id="alice"
        )
    with pytest.raises(Forbidden):
        await send(database, BOB, "as alice", user_id="alice")
    assert await session_count(database) == 1
    assert await messages_containing(database, "as alice") == 0


async def test_a_user_naming_themselves_is_allowed(database: Database) -> None:
    session_id = await send(database, BOB, "hello", user_id="bob")

    listed = await session_service.get_sessions_list(
        database, BOB, page=1, page_size=50, user_id="bob"
    )

    assert [summary.session_id for summary in listed.sessions] == [session_id]
    assert (await session_row(database, session_id))["user_id"] == "bob"


async def test_the_service_lists_everyones_sessions_or_one_users(database: Database) -> None:
    alices = await send(database, ALICE, "alice's")
    bobs = await send(database, BOB, "bob's")

    everyone = await session_service.get_sessions_list(
        database, SERVICE, page=1, page_size=50, user_id=None
    )
    only_alice = await session_service.get_sessions_list(
        database, SERVICE, page=1, page_size=50, user_id="alice"
    )

    assert {summary.session_id for summary in everyone.sessions} == {alices, bobs}
    assert [summary.session_id for summary in only_alice.sessions] == [alices]


async def test_the_service_can_read_and_delete_any_session(database: Database) -> None:
    session_id = await send(database, ALICE, "alice's")

    detail = await session_service.get_session(database, SERVICE, session_id)
    assert [message.role for message in detail.messages] == ["user", "assistant"]

    await session_service.delete_session(database, SERVICE, session_id)
    with pytest.raises(SessionNotFound):
        await session_service.get_session(database, ALICE, session_id)
    assert await session_count(database) == 0


async def test_the_service_can_continue_any_session(database: Database) -> None:
    session_id = await send(database, ALICE, "alice's")

    await send(database, SERVICE, "a follow-up from the backend", session_id=session_id)

    assert (await session_row(database, session_id))["user_id"] == "alice"
    assert (await session_service.get_session(database, ALICE, session_id)).message_count == 4


async def test_a_session_the_service_creates_for_alice_is_alices(database: Database) -> None:
    session_id = await send(database, SERVICE, "welcome, alice", user_id="alice")

    assert (await session_row(database, session_id))["user_id"] == "alice"
    detail = await session_service.get_session(database, ALICE, session_id)
    assert detail.messages[0].content == "welcome, alice"
    listed = await session_service.get_sessions_list(
        database, ALICE, page=1, page_size=50, user_id=None
    )
    assert [summary.session_id for summary in listed.sessions] == [session_id]
    with pytest.raises(SessionNotFound):
        await session_service.get_session(database, BOB, session_id)
