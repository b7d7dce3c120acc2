"""Stopping the reply being generated for a session, and resuming its stream."""

from typing import Annotated

from fastapi import APIRouter, Header, Response
from starlette.responses import StreamingResponse

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep, ReplyTasksDep
from app.kit.error_responses import AUTH_ERRORS, error_responses, json_error_responses
from app.kit.http.sse import SSE_CONTENT, event_stream_response
from app.kit.schemas import SessionIdPath
from app.replies.live import EVENT_ID_PATTERN, EventId
from app.replies.resume import resume_stream
from app.replies.schemas import StopResult
from app.replies.streaming import stop_reply

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])

# The id of an event of a reply's stream; empty (an EventSource's reset id) counts as absent.
_LAST_EVENT_ID = "^(?:" + EVENT_ID_PATTERN.strip("^$") + ")?$"


@router.post(
    "/sessions/{session_id}/stop",
    summary="Stop the reply being streamed for a session",
    responses=error_responses(404, 500, *AUTH_ERRORS),
)
async def stop_session_reply(
    session_id: SessionIdPath, caller: CallerDep, db: DatabaseDep, tasks: ReplyTasksDep
) -> StopResult:
    """What was generated so far is saved as the reply (`metadata.status` `incomplete`, or
    `failed` if nothing was), and the stream ends with `done` (`status: incomplete`). Answers
    once the reply is saved; `stopped` is false when no reply was being generated. A stop acts
    on the replica that runs the stream (see the README on scaling out)."""
    return StopResult(stopped=await stop_reply(db, tasks, caller, session_id))


@router.get(
    "/sessions/{session_id}/stream",
    summary="Resume the stream of the reply being generated for a session",
    # No media type of its own: the 200 is documented once, as the events.
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {
            "description": "The stream, resumed: the events of `POST /api/v1/chat/stream`.",
            "content": SSE_CONTENT,
        },
        204: {"description": "No reply is being generated for the session."},
        **json_error_responses(404, 500, *AUTH_ERRORS),
    },
    description="""With `Last-Event-ID` (the `id` of the last event received,
`<message_id>:<offset>`): the reply's text after that event, as one `delta` or more, then
the live deltas, then `done` or `error`, each event with its `id`; the text received is the
reply's, with no gap and no repeat. If that reply has ended meanwhile, the rest of its stored
text and a `done` with its stored status (`complete`, `incomplete`, or `failed` for a reply
without text). An id that names no reply of the session counts as absent; a malformed one is
a 422.

Without it: the reply started last of those being generated for the session, from its
`session` event, with the text so far as one `delta`, then the live events. When none is
being generated: 204.""",
)
async def resume_session_stream(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    tasks: ReplyTasksDep,
    last_event_id: Annotated[
        str,
        Header(
            pattern=_LAST_EVENT_ID,
            description="The `id` of the last event received: `<message_id>:<offset>`.",
        ),
    ] = "",
) -> Response:
    last = EventId.parse(last_event_id) if last_event_id else None
    events = await resume_stream(db, tasks, caller, session_id, last)
    if events is None:
        return Response(status_code=204)
    return event_stream_response(events)
