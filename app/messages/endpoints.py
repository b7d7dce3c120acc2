"""Sending a message: the reply as one JSON body, or streamed (Server-Sent Events)."""

from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.auth.dependencies import CallerDep
from app.deps import AssistantDep, DatabaseDep, ReplyTasksDep, SettingsDep
from app.kit.error_responses import AUTH_ERRORS, error_responses, json_error_responses
from app.messages import service
from app.messages.schemas import ChatResponse
from app.ratelimit.dependencies import RateLimitedChatRequest
from app.replies.schemas import StreamDelta, StreamDone, StreamError, StreamStarted
from app.replies.streaming import ReplyStream, StreamEvent, start_chat_stream

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])

_EVENT_NAMES: dict[type[StreamEvent], str] = {
    StreamDelta: "delta",
    StreamDone: "done",
    StreamError: "error",
}


# Every route here can also fail unexpectedly (a database outage, say): 500.
_SEND_ERRORS = (400, 403, 404, 413, 429, 500, *AUTH_ERRORS)


@router.post(
    "",
    summary="Send a message and get the assistant's reply",
    responses=error_responses(
        *_SEND_ERRORS,
        502,
        504,
        descriptions={
            503: "The token signing keys (AUTH_JWKS_URL) cannot be fetched, or the service "
            "shut down before the reply was done (the message was saved, and the reply as "
            "failed)."
        },
    ),
)
async def chat(
    body: RateLimitedChatRequest,
    caller: CallerDep,
    db: DatabaseDep,
    assistant: AssistantDep,
    tasks: ReplyTasksDep,
    settings: SettingsDep,
) -> ChatResponse:
    """Creates the session on its first message; saves the message and the reply.

    A `session_id` that another user has answers 404 and writes nothing; one nobody has is
    created. Choose random ids (UUIDs): a 404 shows that an id is taken.
    """
    return await service.process_chat(
        db,
        assistant,
        caller,
        body,
        history_max_messages=settings.history_max_messages,
        tasks=tasks,
    )


async def _start_stream(
    body: RateLimitedChatRequest,
    caller: CallerDep,
    db: DatabaseDep,
    assistant: AssistantDep,
    tasks: ReplyTasksDep,
    settings: SettingsDep,
) -> ReplyStream:
    # A dependency, so that errors before the first event still get their own HTTP status.
    return await start_chat_stream(
        db, assistant, tasks, caller, body, history_max_messages=settings.history_max_messages
    )


@router.post(
    "/stream",
    summary="Send a message and stream the assistant's reply (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses=json_error_responses(*_SEND_ERRORS),
)
async def chat_stream(
    stream: Annotated[ReplyStream, Depends(_start_stream)],
) -> AsyncIterable[ServerSentEvent]:
    """Events: `session` (`{session_id, user_message_id}`), then `delta` (`{content}`) for each
    piece of the reply, then `done` (`{session_id, message_id, status}`) or `error`
    (`{detail}`). `status` is `incomplete` when the reply was stopped (`POST .../stop`).

    The reply is generated and saved even if the client disconnects mid-stream.
    """
    started = StreamStarted(session_id=stream.session_id, user_message_id=stream.user_message_id)
    yield ServerSentEvent(event="session", data=started)
    async for event in stream.events():
        yield ServerSentEvent(event=_EVENT_NAMES[type(event)], data=event)
