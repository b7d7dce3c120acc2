"""Chat endpoints: send a message (plain or streamed), list, open and delete sessions."""

from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.api.deps import (
    AssistantDep,
    CallerDep,
    DatabaseDep,
    MessageRateLimitDep,
    ReplyTasksDep,
    SettingsDep,
)
from app.api.errors import AUTH_ERRORS, error_responses, json_error_responses
from app.models.chat import (
    SESSION_ID_PATTERN,
    ChatRequest,
    ChatResponse,
    SessionDetail,
    SessionsListResponse,
    StreamDelta,
    StreamDone,
    StreamError,
    StreamStarted,
    UserId,
)
from app.services import chat as chat_service
from app.services.streaming import ReplyStream, StreamEvent, start_chat_stream

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])

SessionIdPath = Annotated[
    str,
    Path(pattern=SESSION_ID_PATTERN, description="The session's id."),
]

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
    dependencies=[MessageRateLimitDep],
    responses=error_responses(*_SEND_ERRORS, 502, 504),
)
async def chat(
    body: ChatRequest,
    caller: CallerDep,
    db: DatabaseDep,
    assistant: AssistantDep,
    settings: SettingsDep,
) -> ChatResponse:
    """Creates the session on its first message; saves the message and the reply.

    Continuing a session that is not the caller's answers 404, as if it did not exist.
    """
    return await chat_service.process_chat(
        db, assistant, caller, body, history_max_messages=settings.history_max_messages
    )


async def _start_stream(
    body: ChatRequest,
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
    dependencies=[MessageRateLimitDep],
    responses=json_error_responses(*_SEND_ERRORS),
)
async def chat_stream(
    stream: Annotated[ReplyStream, Depends(_start_stream)],
) -> AsyncIterable[ServerSentEvent]:
    """Events: `session` (`{session_id, user_message_id}`), then `delta` (`{content}`) for each
    piece of the reply, then `done` (`{session_id, message_id}`) or `error` (`{detail}`).

    The reply is generated and saved even if the client disconnects mid-stream.
    """
    started = StreamStarted(session_id=stream.session_id, user_message_id=stream.user_message_id)
    yield ServerSentEvent(event="session", data=started)
    async for event in stream.events():
        yield ServerSentEvent(event=_EVENT_NAMES[type(event)], data=event)


@router.get(
    "/sessions",
    summary="List chat sessions, most recent activity first",
    responses=error_responses(403, 500, *AUTH_ERRORS),
)
async def list_sessions(
    caller: CallerDep,
    db: DatabaseDep,
    page: Annotated[int, Query(ge=1, le=10_000_000, description="1-based page number.")] = 1,
    page_size: Annotated[int, Query(ge=1, le=100, description="Sessions per page.")] = 50,
    user_id: Annotated[
        UserId | None,
        Query(
            description=(
                "Only this user's sessions. With authentication on, only service callers may "
                "name another user; everyone else always gets their own sessions."
            )
        ),
    ] = None,
) -> SessionsListResponse:
    return await chat_service.get_sessions_list(
        db, caller, page=page, page_size=page_size, user_id=user_id
    )


@router.get(
    "/sessions/{session_id}",
    summary="Open a session: its summary and messages, oldest first",
    responses=error_responses(404, 500, *AUTH_ERRORS),
)
async def get_session(
    session_id: SessionIdPath, caller: CallerDep, db: DatabaseDep
) -> SessionDetail:
    return await chat_service.get_session(db, caller, session_id)


@router.delete(
    "/sessions/{session_id}",
    summary="Delete a session and its messages",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 500, *AUTH_ERRORS),
)
async def delete_session(session_id: SessionIdPath, caller: CallerDep, db: DatabaseDep) -> None:
    await chat_service.delete_session(db, caller, session_id)
