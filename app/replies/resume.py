"""Resuming the stream of a reply: `GET /api/v1/chat/sessions/{session_id}/stream`.

With `Last-Event-ID` (`<reply id>:<offset>`, the id of the last event the client got), the
stream goes on after that event: the rest of the reply's text, then its end. A reply that has
ended meanwhile is answered from what is stored: the rest of its text and a `done` with its
stored status. An id that names no reply of the session is treated as absent. Without it, the
reply started last of those being generated for the session, from its `session` event; when
none is, there is nothing to resume (204).
"""

from collections.abc import AsyncIterator

from fastapi.sse import ServerSentEvent

from app.auth.access import Caller
from app.idempotency.queries import KeyedRequest
from app.kit import metrics
from app.kit.db.engine import Database
from app.kit.errors import ReplyLost, SessionNotFound
from app.kit.http.sse import keepalive_frames
from app.replies import queries as reply_queries
from app.replies.generation import ReplyTasks
from app.replies.live import EventId, Sent, StreamEvent
from app.replies.queries import ReplyState
from app.replies.relay import ReplyRelay, stored_end
from app.replies.schemas import StreamDelta
from app.replies.streaming import live_frames, reply_events, started_event
from app.sessions import queries as session_queries

# A reply of this process that is in the database but not followed here is starting (its
# transaction committed a moment before it is followed) or has just ended: look again.
_LOOKS = 3


async def resume_stream(
    db: Database,
    tasks: ReplyTasks,
    caller: Caller,
    session_id: str,
    last: EventId | None,
    *,
    relay: ReplyRelay | None = None,
    from_start: bool = False,
) -> AsyncIterator[bytes] | None:
    """The resumed stream as sent; None when there is nothing to resume. SessionNotFound
    for a session that is not the caller's. A reply another process generates is followed
    through `relay` (without it: what is stored of it so far, and the stream ends).
    `from_start`: the reply `last` names only, from its `session` event (`replay_stream`)."""
    target: ReplyState | None = None
    after: int | None = None
    for _ in range(_LOOKS):
        async with db.read() as conn:
            summary = await session_queries.get_session_summary(
                conn, session_id, owner=caller.owner_filter
            )
            if summary is None:
                raise SessionNotFound()
            named = (
                None
                if last is None
                else await reply_queries.find_reply(conn, session_id, last.message_id)
            )
            generating = (
                []
                if named or from_start
                else await reply_queries.generating_replies(conn, session_id)
            )
        target = named or next(iter(generating), None)
        if target is None:
            return None
        after = None if named is None or last is None else last.offset
        # The `session` event first: a stream from its start.
        announce = after is None or from_start
        # Followed here: the events come from the reply's own task.
        if (live := tasks.live.get(target.message_id)) is not None:
            first = (
                started_event(session_id, live.question_id, live.message_id) if announce else None
            )
            return live_frames(live.message_id, live.follow(after or 0), first)
        if target.process_id is None:
            return keepalive_frames(_stored(session_id, target, after or 0, announce))
        if target.process_id != tasks.process_id:
            break
    assert target is not None
    if relay is not None:
        return keepalive_frames(_relayed(session_id, relay, target, after, announce))
    return keepalive_frames(_stored_so_far(session_id, target, after, announce))


async def replay_stream(
    db: Database,
    tasks: ReplyTasks,
    caller: Caller,
    earlier: KeyedRequest,
    *,
    relay: ReplyRelay | None = None,
) -> AsyncIterator[bytes]:
    """The stream of a request sent again under its Idempotency-Key: the reply its first
    sending started, from its `session` event, as a resumed stream goes on (live, relayed, or
    as stored once ended)."""
    events = await resume_stream(
        db,
        tasks,
        caller,
        earlier.session_id,
        EventId(earlier.reply_id, 0),
        relay=relay,
        from_start=True,
    )
    if events is None:  # the key goes with its session; deleted since it was read
        raise ReplyLost()
    return events


async def _relayed(
    session_id: str, relay: ReplyRelay, reply: ReplyState, after: int | None, announce: bool
) -> AsyncIterator[ServerSentEvent]:
    with metrics.STREAMS_IN_PROGRESS.track_inprogress():
        if announce:
            yield started_event(session_id, reply.question_id, reply.message_id)
        followed = relay.follow_elsewhere(session_id, reply, after or 0)
        async for event in reply_events(reply.message_id, followed):
            yield event


async def _stored(
    session_id: str, reply: ReplyState, after: int, announce: bool
) -> AsyncIterator[ServerSentEvent]:
    """A reply that has ended: the rest of its stored text, and its stored status."""
    if announce:
        yield started_event(session_id, reply.question_id, reply.message_id)
    done = stored_end(session_id, reply)
    async for event in reply_events(reply.message_id, _sent(reply.content, after, done)):
        yield event


async def _sent(text: str, after: int, end: StreamEvent | None) -> AsyncIterator[Sent]:
    if after < len(text):
        yield Sent(StreamDelta(content=text[after:]), len(text))
    if end is not None:
        yield Sent(end, max(after, len(text)))


async def _stored_so_far(
    session_id: str, reply: ReplyState, after: int | None, announce: bool
) -> AsyncIterator[ServerSentEvent]:
    """A reply generated by another process: what is saved of it so far (the stream ends
    without `done`; resume again for more)."""
    if announce:
        yield started_event(session_id, reply.question_id, reply.message_id)
    async for event in reply_events(reply.message_id, _sent(reply.content, after or 0, None)):
        yield event
