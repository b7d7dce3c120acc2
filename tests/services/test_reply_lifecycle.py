"""The reply lifecycle on both databases: a reply is visible while it is generated, and the
sweep finishes the replies of dead processes (stale heartbeat, or a pid gone on this host) as
interrupted, once, and leaves those of live processes alone."""

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, select, update

from app.assistants import Reply, ReplyEnd, ReplyEvent, TextDelta, Turn
from app.auth.access import Caller
from app.kit.db.engine import Database, DriverConnection, create_engine
from app.kit.db.tables import chat_processes, chat_replies_generating, chat_search
from app.kit.db.types import utc_now
from app.kit.db.unavailable import DETAIL
from app.messages import service as message_service
from app.messages.schemas import ChatRequest
from app.replies import queries as reply_queries
from app.replies.generation import ReplyTasks
from app.replies.live import StreamEvent
from app.replies.liveness import ProcessLiveness, this_host
from app.replies.metadata import generating_metadata
from app.replies.schemas import StreamDelta, StreamDone, StreamError
from app.replies.streaming import ReplyStream, start_chat_stream
from app.search import service as search_service
from app.sessions import service as session_service
from app.sessions.queries import SessionFilter
from tests.outage import hold_every_connection, small_pool_settings
from tests.services.helpers import GatedAssistant, message_rows, session_row

OPEN = Caller.open_mode()
STALE_SECONDS = 30.0


def sweeper(database: Database) -> ProcessLiveness:
    return ProcessLiveness(
        database, uuid.uuid4(), heartbeat_seconds=1.0, stale_seconds=STALE_SECONDS
    )


async def register(database: Database, *, host: str, pid: int, seconds_ago: float) -> uuid.UUID:
    process_id = uuid.uuid4()
    at = utc_now() - timedelta(seconds=seconds_ago)
    async with database.write() as conn:
        await reply_queries.report_alive(
            conn, process_id=process_id, host=host, pid=pid, started_at=at, now=at
        )
    return process_id


async def reply_in_progress(
    database: Database, process_id: uuid.UUID, text: str, session_id: str = "s"
) -> uuid.UUID:
    """A user message, and a reply to it that `process_id` is generating, saved up to `text`."""
    question = await message_service.accept_user_message(
        database,
        OPEN,
        ChatRequest(message="the question", session_id=session_id),
        history_max_messages=5,
    )
    async with database.write() as conn:
        stored = await reply_queries.start_reply(
            conn,
            session_id=session_id,
            question_id=question.message.id,
            process_id=process_id,
            metadata=generating_metadata(provider="p", model="m"),
            now=utc_now(),
        )
        assert stored is not None
    async with database.single_statements() as driver:
        saved = await reply_queries.save_draft(
            driver, message_id=stored.id, process_id=process_id, content=text
        )
    assert saved is reply_queries.DraftSaved.SAVED
    return stored.id


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_a_reply_of_a_process_that_stopped_reporting_is_finished_as_interrupted(
    database: Database,
) -> None:
    process = await register(database, host="elsewhere", pid=1, seconds_ago=STALE_SECONDS + 5)
    await reply_in_progress(database, process, "half an answer")

    assert await sweeper(database).sweep() == 1

    [question, reply] = await message_rows(database, "s")
    assert reply["content"] == "half an answer"
    assert reply["metadata"]["status"] == "incomplete"
    assert reply["metadata"]["error"] == "interrupted"
    assert (reply["metadata"]["provider"], reply["metadata"]["model"]) == ("p", "m")
    session = await session_row(database, "s")
    assert session["message_count"] == 2
    assert session["last_message"] == "half an answer"
    assert session["updated_at"] == reply["created_at"] >= question["created_at"]
    async with database.read() as conn:
        indexed = await conn.execute(select(chat_search.c.seq).where(chat_search.c.seq == 2))
        assert indexed.all(), "the interrupted reply's text is not searchable"
        # The dead process is forgotten once nothing of it is left to finish.
        left = await conn.execute(select(chat_processes.c.id).where(chat_processes.c.id == process))
        assert left.all() == []


async def test_a_reply_with_no_text_yet_is_finished_as_failed_and_keeps_the_preview(
    database: Database,
) -> None:
    process = await register(database, host="elsewhere", pid=1, seconds_ago=STALE_SECONDS + 5)
    await reply_in_progress(database, process, "")

    assert await sweeper(database).sweep() == 1

    [_, reply] = await message_rows(database, "s")
    assert (reply["metadata"]["status"], reply["metadata"]["error"]) == ("failed", "interrupted")
    assert (await session_row(database, "s"))["last_message"] == "the question"


async def test_the_replies_of_live_processes_are_left_alone(database: Database) -> None:
    elsewhere = await register(database, host="elsewhere", pid=1, seconds_ago=1)
    # Another live process on this host (this one's parent).
    here = await register(database, host=this_host(), pid=os.getppid(), seconds_ago=1)
    await reply_in_progress(database, elsewhere, "one", session_id="a")
    await reply_in_progress(database, here, "two", session_id="b")

    assert await sweeper(database).sweep() == 0

    for session_id in ("a", "b"):
        [_, reply] = await message_rows(database, session_id)
        assert reply["metadata"]["status"] == "generating"


async def test_a_dead_pid_on_this_host_is_finished_at_once(database: Database) -> None:
    process = await register(database, host=this_host(), pid=dead_pid(), seconds_ago=0)
    await reply_in_progress(database, process, "cut")

    assert await sweeper(database).sweep() == 1

    [_, reply] = await message_rows(database, "s")
    assert (reply["metadata"]["status"], reply["metadata"]["error"]) == (
        "incomplete",
        "interrupted",
    )


async def test_another_instance_in_this_process_is_alive(database: Database) -> None:
    """Two apps in one OS process (as the replica tests run them) share its pid: neither
    takes the other for an earlier process whose pid this one reuses."""
    other = ProcessLiveness(database, uuid.uuid4(), heartbeat_seconds=60, stale_seconds=300)
    other.start()
    try:
        await other.beat()  # registered once it returns, whatever its own loop has done
        assert await registered(database, other.process_id)
        await reply_in_progress(database, other.process_id, "still writing")

        assert await sweeper(database).sweep() == 0
    finally:
        await other.stop()
    [_, reply] = await message_rows(database, "s")
    assert reply["metadata"]["status"] == "generating"


@pytest.mark.skipif(sys.platform != "linux", reason="pid namespaces are Linux's")
async def test_a_pid_registered_under_this_hostname_from_elsewhere_is_left_to_go_stale(
    database: Database,
) -> None:
    """A container sharing this hostname (host networking), or a machine cloned from the same
    image, has pids of its own: one not running here may be running there."""
    process = await register(database, host=socket.gethostname(), pid=dead_pid(), seconds_ago=0)
    await reply_in_progress(database, process, "elsewhere")

    assert await sweeper(database).sweep() == 0


@pytest.mark.skipif(sys.platform != "linux", reason="pid namespaces are Linux's")
def test_this_host_is_the_machine_its_boot_and_pid_namespace() -> None:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
        boot_id = boot.read().strip()
    assert this_host() == f"{socket.gethostname()} {boot_id} {os.readlink('/proc/self/ns/pid')}"


async def registered(database: Database, process_id: uuid.UUID) -> bool:
    async with database.read() as conn:
        rows = await conn.execute(
            select(chat_processes.c.id).where(chat_processes.c.id == process_id)
        )
        return bool(rows.all())


async def test_an_unregistered_process_counts_as_dead_once_its_reply_is_old(
    database: Database,
) -> None:
    process = await register(database, host="elsewhere", pid=1, seconds_ago=0)
    await reply_in_progress(database, process, "text")
    async with database.write() as conn:
        await conn.execute(delete(chat_processes).where(chat_processes.c.id == process))

    # Just started: its process may not have registered yet.
    assert await sweeper(database).sweep() == 0
    async with database.write() as conn:
        await conn.execute(
            update(chat_replies_generating).values(
                started_at=utc_now() - timedelta(seconds=STALE_SECONDS + 5)
            )
        )
    assert await sweeper(database).sweep() == 1


async def test_sweepers_racing_finish_a_reply_once(database: Database) -> None:
    process = await register(database, host="elsewhere", pid=1, seconds_ago=STALE_SECONDS + 5)
    await reply_in_progress(database, process, "once")

    finished = await asyncio.gather(*(sweeper(database).sweep() for _ in range(4)))

    assert sum(finished) == 1
    async with database.read() as conn:
        entries = await conn.execute(select(chat_search.c.seq).where(chat_search.c.seq == 2))
        assert len(entries.all()) == 1


@dataclass
class GatedReply:
    """A reply streaming, its first piece sent (`first`) and the rest held until the
    assistant's gate opens; `events` are those after the first."""

    assistant: GatedAssistant
    stream: ReplyStream
    events: AsyncIterator[StreamEvent]
    first: StreamDelta


async def gated_reply(database: Database, tasks: ReplyTasks, session_id: str) -> GatedReply:
    assistant = GatedAssistant()
    stream = await start_chat_stream(
        database,
        assistant,
        tasks,
        OPEN,
        ChatRequest(message="the question", session_id=session_id),
        history_max_messages=5,
    )
    events = stream.events()
    first = await anext(events)
    assert isinstance(first, StreamDelta)
    return GatedReply(assistant, stream, events, first)


async def test_a_reply_being_generated_is_read_with_its_session(database: Database) -> None:
    reply = await gated_reply(database, ReplyTasks(), "s")
    assistant, events = reply.assistant, reply.events

    during = await session_service.get_session(database, OPEN, "s")
    assistant.gate.set()
    done = [event async for event in events][-1]
    after = await session_service.get_session(database, OPEN, "s")

    assert [m.role for m in during.messages] == ["user", "assistant"]
    assert during.messages[1].metadata["status"] == "generating"
    assert during.message_count == 2
    # The preview is the question until the reply has text to replace it with.
    assert during.last_message == "the question"
    assert isinstance(done, StreamDone)
    assert after.messages[1].id == during.messages[1].id == done.message_id
    assert after.messages[1].metadata["status"] == "complete"
    assert after.last_message == "first second third"


class ManyPiecesAssistant:
    """Streams `PIECES` pieces as fast as it can."""

    PIECES = 200
    provider = "many"
    model = "many-1"

    async def aclose(self) -> None:
        """Holds nothing open."""

    async def reply(self, history: Sequence[Turn]) -> Reply:
        raise NotImplementedError

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        for index in range(self.PIECES):
            await asyncio.sleep(0)  # a piece at each turn of the event loop
            yield TextDelta(f"{index} ")
        yield ReplyEnd(model=self.model)


async def test_a_growing_reply_is_saved_in_batches_not_per_piece(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[str] = []
    save_draft = reply_queries.save_draft

    async def recording_save_draft(
        conn: DriverConnection, **values: Any
    ) -> reply_queries.DraftSaved:
        saved.append(values["content"])
        return await save_draft(conn, **values)

    monkeypatch.setattr(reply_queries, "save_draft", recording_save_draft)
    tasks = ReplyTasks(save_interval_seconds=0)
    stream = await start_chat_stream(
        database,
        ManyPiecesAssistant(),
        tasks,
        OPEN,
        ChatRequest(message="count", session_id="s"),
        history_max_messages=5,
    )
    events = [event async for event in stream.events()]

    assert isinstance(events[-1], StreamDone)
    # Even with no interval, one write at a time, each taking all that arrived meanwhile.
    assert 1 <= len(saved) < ManyPiecesAssistant.PIECES / 2
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(saved))
    [_, reply] = await message_rows(database, "s")
    assert reply["content"] == "".join(f"{index} " for index in range(200))


# --- Ends that could not be saved, and this process's orphans -----------------------------


@asynccontextmanager
async def small_pool(migrated_url: str) -> AsyncIterator[Database]:
    """A database of its own for the replies' process, whose pool a test can use up."""
    db = Database(create_engine(small_pool_settings(migrated_url)))
    try:
        yield db
    finally:
        await db.dispose()


@dataclass
class UnsavedReply:
    """A reply whose end could not be written, its process's database and heartbeat."""

    db: Database
    tasks: ReplyTasks
    liveness: ProcessLiveness
    message_id: uuid.UUID
    # What the stream of the reply got, and the replies whose end the heartbeat announced.
    streamed: list[StreamEvent]
    ended: list[uuid.UUID]


@asynccontextmanager
async def reply_whose_end_fails(migrated_url: str) -> AsyncIterator[UnsavedReply]:
    """A streamed reply, "first second third", whose end comes while the database cannot
    take it; the database serves again when this is entered."""
    async with small_pool(migrated_url) as db:
        # Nothing saved as it grows: only its end holds the text.
        tasks = ReplyTasks(save_interval_seconds=3600)
        ended: list[uuid.UUID] = []
        liveness = ProcessLiveness(
            db,
            tasks.process_id,
            heartbeat_seconds=1.0,
            stale_seconds=STALE_SECONDS,
            on_ended=ended.append,
            replies=tasks,
        )
        await liveness.beat()  # registered
        reply = await gated_reply(db, tasks, "s")
        streamed: list[StreamEvent] = [reply.first]
        async with AsyncExitStack() as held:
            await hold_every_connection(db, held)
            reply.assistant.gate.set()
            streamed += [event async for event in reply.events]
            await tasks.wait_idle()
        yield UnsavedReply(db, tasks, liveness, reply.stream.message_id, streamed, ended)


async def test_an_end_that_could_not_be_saved_is_saved_by_the_next_heartbeat(
    migrated_url: str, database: Database
) -> None:
    unsaved_before = REGISTRY.get_sample_value("chat_reply_ends_unsaved") or 0.0
    async with reply_whose_end_fails(migrated_url) as unsaved:
        # The stream ended as it does today: the database's trouble, as an `error`.
        assert unsaved.streamed[-1] == StreamError(detail=DETAIL)
        [_, reply] = await message_rows(database, "s")
        assert reply["metadata"]["status"] == "generating"
        assert REGISTRY.get_sample_value("chat_reply_ends_unsaved") == unsaved_before + 1
        # A kept end is not an orphan, however old.
        await age_replies(database)
        assert await unsaved.liveness.sweep() == 0

        await unsaved.liveness.beat()

        [question, reply] = await message_rows(database, "s")
        assert reply["id"] == unsaved.message_id
        assert reply["content"] == "first second third"
        assert reply["metadata"]["status"] == "complete"
        assert "error" not in reply["metadata"]
        assert (reply["metadata"]["provider"], reply["metadata"]["model"]) == ("gated", "gate-1")
        session = await session_row(database, "s")
        assert session["message_count"] == 2
        assert session["last_message"] == "first second third"
        assert session["updated_at"] == reply["created_at"] >= question["created_at"]
        found = await search_service.search_sessions(
            database,
            SessionFilter(user_id=None, archived=False),
            query_words=["third"],
            size=10,
            page=1,
            cursor=None,
            include_total=False,
        )
        assert [summary.session_id for summary in found.sessions] == ["s"]
        assert unsaved.ended == [unsaved.message_id]
        assert len(unsaved.tasks.unsaved_ends) == 0
        assert REGISTRY.get_sample_value("chat_reply_ends_unsaved") == unsaved_before
        # Saved once: the next round has nothing to write.
        await unsaved.liveness.beat()
        assert unsaved.ended == [unsaved.message_id]


async def test_a_kept_end_does_not_overwrite_a_reply_finished_meanwhile_elsewhere(
    migrated_url: str, database: Database
) -> None:
    async with reply_whose_end_fails(migrated_url) as unsaved:
        # The process stalled long enough for another to take it for dead.
        stalled_at = utc_now() - timedelta(seconds=STALE_SECONDS + 5)
        async with database.write() as conn:
            await conn.execute(
                update(chat_processes)
                .where(chat_processes.c.id == unsaved.tasks.process_id)
                .values(heartbeat_at=stalled_at)
            )
        assert await sweeper(database).sweep() == 1

        await unsaved.liveness.beat()

        [_, reply] = await message_rows(database, "s")
        assert (reply["metadata"]["status"], reply["metadata"]["error"]) == (
            "failed",
            "interrupted",
        )
        assert reply["content"] == ""
        assert (await session_row(database, "s"))["last_message"] == "the question"
        # Dropped, not announced (the sweep that finished it did).
        assert len(unsaved.tasks.unsaved_ends) == 0
        assert unsaved.ended == []


async def test_an_end_still_unsaved_is_kept_for_the_next_round(
    migrated_url: str, database: Database
) -> None:
    async with reply_whose_end_fails(migrated_url) as unsaved, AsyncExitStack() as held:
        await hold_every_connection(unsaved.db, held)
        await unsaved.liveness.beat()
        assert len(unsaved.tasks.unsaved_ends) == 1
        await held.aclose()

        await unsaved.liveness.beat()

        [_, reply] = await message_rows(database, "s")
        assert reply["metadata"]["status"] == "complete"


async def test_shutdown_writes_the_ends_left_unsaved(migrated_url: str, database: Database) -> None:
    async with reply_whose_end_fails(migrated_url) as unsaved:
        await unsaved.liveness.stop()

        [_, reply] = await message_rows(database, "s")
        assert (reply["content"], reply["metadata"]["status"]) == ("first second third", "complete")
        assert unsaved.ended == [unsaved.message_id]


async def age_replies(database: Database) -> None:
    """Every reply being generated started longer than PROCESS_STALE_SECONDS ago."""
    async with database.write() as conn:
        await conn.execute(
            update(chat_replies_generating).values(
                started_at=utc_now() - timedelta(seconds=STALE_SECONDS + 5)
            )
        )


async def test_a_reply_of_this_process_that_no_task_produces_is_swept_once_old(
    database: Database,
) -> None:
    tasks = ReplyTasks()
    liveness = ProcessLiveness(
        database,
        tasks.process_id,
        heartbeat_seconds=1.0,
        stale_seconds=STALE_SECONDS,
        replies=tasks,
    )
    await liveness.beat()  # registered, and alive from now on
    # Its task died without writing its end.
    await reply_in_progress(database, tasks.process_id, "half", session_id="orphan")
    running_reply = await gated_reply(database, tasks, "running")

    # Just started: a reply's row commits before its task begins.
    assert await liveness.sweep() == 0
    [_, orphan] = await message_rows(database, "orphan")
    assert orphan["metadata"]["status"] == "generating"

    await age_replies(database)
    assert await liveness.sweep() == 1

    [_, orphan] = await message_rows(database, "orphan")
    assert (orphan["content"], orphan["metadata"]["status"], orphan["metadata"]["error"]) == (
        "half",
        "incomplete",
        "interrupted",
    )
    # The reply its task produces is left to it.
    [_, running] = await message_rows(database, "running")
    assert running["metadata"]["status"] == "generating"
    running_reply.assistant.gate.set()
    assert [event async for event in running_reply.events][-1] == StreamDone(
        session_id="running", message_id=running_reply.stream.message_id, status="complete"
    )
