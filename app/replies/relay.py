"""Replies that another process generates: following their stream, and stopping them.

Each process listens on a channel of its own (`chat_p_<process id>`) for requests about the
replies it generates; the events of a reply go on `chat_r_<reply id>`, only while someone
in another process asked to follow it (one process's 1,000 streams cost nothing until then).

Following (`follow_elsewhere`): the stored draft after the client's offset first; then a
`follow` request with the offset reached, which the producer answers with the text after it
and every new piece (each message with its end offset, cut to fit in a NOTIFY), then the end.
The follower keeps what extends its text and drops what repeats; on a gap (a lost message) it
asks again from its offset. When nothing arrives for `poll_seconds`, or when a process says
that the reply ended (`ended`: the producer, or the process whose sweep finished it as
interrupted), it reads the stored reply: a reply that has ended is finished from there (the
rest of its text, `done` with its stored status). So readers of a reply whose process died get
`done` (`incomplete`) when another process's sweep finishes it, at most PROCESS_STALE_SECONDS
+ PROCESS_HEARTBEAT_SECONDS after its last heartbeat, or, if that announcement is lost, at
their next read of the stored reply, `poll_seconds` later.

Stopping (`stop_elsewhere`): the reply's row in chat_replies_generating is marked
(`stop_requested_at`), a `stop` request goes to its process, and the caller waits, at most
`stop_wait_seconds`, until the reply has left the table (it is saved then). A process stops
its replies on the request, or, where no message can reach it (no bus: SQLite), when it next
saves the reply's text (REPLY_SAVE_INTERVAL_MS) or reports its heartbeat.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import suppress
from typing import Any

from app.kit.db.engine import Database
from app.kit.db.types import utc_now
from app.replies import queries as reply_queries
from app.replies.bus import Bus, Message
from app.replies.generation import ReplyTasks
from app.replies.live import Sent, StreamEvent
from app.replies.queries import ReplyState
from app.replies.schemas import StreamDelta, StreamDone, StreamError

logger = logging.getLogger(__name__)

# Characters per `delta` message: at most 6 bytes each once JSON-escaped, under the limit.
_PIECE_CHARS = 1000


def process_channel(process_id: uuid.UUID) -> str:
    return f"chat_p_{process_id.hex}"


def reply_channel(message_id: uuid.UUID) -> str:
    return f"chat_r_{message_id.hex}"


def stored_end(session_id: str, reply: ReplyState) -> StreamDone:
    """The `done` of a reply that has ended, with its stored status."""
    status = reply.status if reply.status in ("complete", "failed") else "incomplete"
    return StreamDone(session_id=session_id, message_id=reply.message_id, status=status)


class ReplyRelay:
    """This process's side of the messages about replies between processes."""

    def __init__(
        self,
        db: Database,
        tasks: ReplyTasks,
        bus: Bus | None,
        *,
        poll_seconds: float,
        stop_wait_seconds: float,
    ) -> None:
        self._db = db
        self._tasks = tasks
        self.bus = bus
        self._poll = poll_seconds
        self._stop_wait = stop_wait_seconds
        # The producer's side: a task per follower elsewhere, by its id.
        self._serving: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if self.bus is not None:
            self.bus.start()
            await self.bus.listen(process_channel(self._tasks.process_id), self._on_request)

    async def close(self) -> None:
        for task in [*self._serving.values(), *self._background]:
            task.cancel()
        if self.bus is not None:
            await self.bus.close()

    # --- This process's replies, for others -------------------------------------------------

    def announce_ended(self, message_id: uuid.UUID) -> None:
        """Tell followers elsewhere that a reply has ended (read it from the database)."""
        if self.bus is not None:
            self.bus.publish(reply_channel(message_id), {"op": "ended"})

    def stop_requested(self, session_ids: Iterable[str]) -> None:
        """Stop the replies of these sessions that this process generates (a stop marked in
        the database by another process)."""
        for session_id in session_ids:
            self._tasks.request_stop(session_id)

    def _on_request(self, message: Message) -> None:
        try:
            match message.get("op"):
                case "follow":
                    self._serve(
                        uuid.UUID(message["reply"]), int(message["from"]), str(message["follower"])
                    )
                case "unfollow":
                    if (task := self._serving.pop(str(message["follower"]), None)) is not None:
                        task.cancel()
                case "stop":
                    replies = [uuid.UUID(reply) for reply in message["replies"]]
                    self._spawn(self._stop_for(str(message["session"]), replies))
        except (KeyError, TypeError, ValueError):
            logger.warning("unreadable request from another process: %r", message)

    def _serve(self, message_id: uuid.UUID, after: int, follower: str) -> None:
        if (previous := self._serving.pop(follower, None)) is not None:
            previous.cancel()  # asked again, from its offset: a message was lost
        live = self._tasks.live.get(message_id)
        if live is None or self.bus is None:
            self.announce_ended(message_id)
            return
        # Following starts now: what comes next is published after the text so far.
        followed = live.follow(after)
        task = asyncio.create_task(self._publish(message_id, followed))
        self._serving[follower] = task
        task.add_done_callback(lambda done: self._forget(follower, done))

    def _forget(self, follower: str, task: "asyncio.Task[None]") -> None:
        # Only if not replaced meanwhile by the task of a later request.
        if self._serving.get(follower) is task:
            del self._serving[follower]

    async def _publish(self, message_id: uuid.UUID, followed: AsyncIterable[Sent]) -> None:
        assert self.bus is not None
        channel = reply_channel(message_id)
        async for sent in followed:
            event = sent.event
            if isinstance(event, StreamDelta):
                text = event.content
                start = sent.offset - len(text)
                for at in range(0, len(text), _PIECE_CHARS):
                    piece = text[at : at + _PIECE_CHARS]
                    end = start + at + len(piece)
                    self.bus.publish(channel, {"op": "delta", "end": end, "text": piece})
            else:
                name = "done" if isinstance(event, StreamDone) else "error"
                data = event.model_dump(mode="json")
                self.bus.publish(
                    channel, {"op": "end", "end": sent.offset, "event": name, "data": data}
                )

    async def _stop_for(self, session_id: str, replies: list[uuid.UUID]) -> None:
        await self._tasks.stop(session_id)
        for message_id in replies:
            self.announce_ended(message_id)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- Replies of other processes --------------------------------------------------------

    async def follow_elsewhere(
        self, session_id: str, reply: ReplyState, after: int
    ) -> AsyncIterator[Sent]:
        """The stream of a reply another process generates, from offset `after`, to its end."""
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        channel = reply_channel(reply.message_id)
        follower = uuid.uuid4().hex
        offset = after
        if self.bus is not None:
            await self.bus.listen(channel, inbox.put_nowait)
        try:
            if len(reply.content) > offset:
                yield Sent(StreamDelta(content=reply.content[offset:]), len(reply.content))
                offset = len(reply.content)
            self._ask(reply, offset, follower)
            asked_at = offset
            while True:
                message: Message | None = None
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        message = await inbox.get()
                op = None if message is None else message.get("op")
                if op == "delta" and message is not None:
                    text, end = str(message["text"]), int(message["end"])
                    start = end - len(text)
                    if start > offset:  # a message was lost: ask again from here, once
                        if asked_at != offset:
                            self._ask(reply, offset, follower)
                            asked_at = offset
                        continue
                    if end > offset:
                        yield Sent(StreamDelta(content=text[offset - start :]), end)
                        offset = end
                    continue
                if op == "end" and message is not None and int(message["end"]) <= offset:
                    yield Sent(_end_event(message), offset)
                    return
                # Nothing for a while, an end past the text received, or `ended`: the
                # stored reply says where it is.
                state = await self._stored(session_id, reply.message_id)
                if state is None:  # deleted meanwhile
                    yield Sent(StreamError(detail="The reply was deleted"), offset)
                    return
                if len(state.content) > offset:
                    yield Sent(StreamDelta(content=state.content[offset:]), len(state.content))
                    offset = len(state.content)
                if state.process_id is None:
                    end_event = _end_event(message) if op == "end" and message else None
                    yield Sent(end_event or stored_end(session_id, state), offset)
                    return
                if op is None or op == "reconnected":  # a request may have been lost
                    self._ask(reply, offset, follower)
                    asked_at = offset
        finally:
            if self.bus is not None:
                with suppress(Exception):
                    await self.bus.unlisten(channel, inbox.put_nowait)
                if reply.process_id is not None:
                    self.bus.publish(
                        process_channel(reply.process_id), {"op": "unfollow", "follower": follower}
                    )

    def _ask(self, reply: ReplyState, offset: int, follower: str) -> None:
        if self.bus is not None and reply.process_id is not None:
            self.bus.publish(
                process_channel(reply.process_id),
                {
                    "op": "follow",
                    "reply": str(reply.message_id),
                    "from": offset,
                    "follower": follower,
                },
            )

    async def _stored(self, session_id: str, message_id: uuid.UUID) -> ReplyState | None:
        async with self._db.read() as conn:
            return await reply_queries.find_reply(conn, session_id, message_id)

    async def stop_elsewhere(self, session_id: str, replies: list[ReplyState]) -> bool:
        """Stop replies that other processes generate; whether any was stopped. Returns once
        they are saved, or after `stop_wait_seconds` (they stop when their process next
        looks: a process that died has them finished by the sweep)."""
        ids = [reply.message_id for reply in replies]
        async with self._db.write() as conn:
            marked = await reply_queries.request_stop(conn, ids, now=utc_now())
        if not marked:
            return False
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        channels = [reply_channel(message_id) for message_id in marked]
        if self.bus is not None:
            for channel in channels:
                await self.bus.listen(channel, inbox.put_nowait)
        try:
            by_process: dict[uuid.UUID, list[str]] = {}
            for reply in replies:
                if reply.message_id in marked and reply.process_id is not None:
                    by_process.setdefault(reply.process_id, []).append(str(reply.message_id))
            for process_id, stopping in by_process.items():
                if self.bus is not None:
                    self.bus.publish(
                        process_channel(process_id),
                        {"op": "stop", "session": session_id, "replies": stopping},
                    )
            with suppress(TimeoutError):
                async with asyncio.timeout(self._stop_wait):
                    while True:
                        async with self._db.read() as conn:
                            left = await reply_queries.still_generating(conn, marked)
                        if not left:
                            break
                        # An `ended` or `end` message, or a look again after a short while.
                        with suppress(TimeoutError):
                            async with asyncio.timeout(min(self._poll, 0.5)):
                                await inbox.get()
        finally:
            if self.bus is not None:
                for channel in channels:
                    with suppress(Exception):
                        await self.bus.unlisten(channel, inbox.put_nowait)
        return True


def _end_event(message: Message) -> StreamEvent:
    data = message.get("data") or {}
    if message.get("event") == "done":
        return StreamDone.model_validate(data)
    return StreamError.model_validate(data)
