"""Sending a message (the reply as one JSON body, or streamed as Server-Sent Events),
regenerating a reply, and the message tree: switching branch, reading every branch."""

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from starlette.responses import StreamingResponse

from app.auth.dependencies import CallerDep
from app.deps import (
    AssistantDep,
    DatabaseDep,
    ReplyRelayDep,
    ReplyTasksDep,
    SettingsDep,
    TitleTasksDep,
)
from app.idempotency import keys as idempotency
from app.idempotency.keys import IdempotencyKey, IdempotencyKeyHeader
from app.idempotency.queries import KeyedRequest
from app.kit.error_responses import AUTH_ERRORS, error_responses, json_error_responses
from app.kit.http.sse import SSE_CONTENT, frames_response
from app.kit.schemas import SessionIdPath
from app.messages import service, tree
from app.messages.schemas import BranchChoice, ChatResponse, SessionTree
from app.ratelimit.dependencies import RateLimitedChatRequest, count_message
from app.replies.generation import ReplyStart
from app.replies.resume import replay_stream
from app.replies.streaming import (
    start_chat_stream,
    start_reply_stream,
    stream_frames,
)
from app.sessions.schemas import SessionDetail

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])


# Every route here can also fail unexpectedly: 500 (and 503 with it, app/kit/error_responses.py).
_SEND_ERRORS = (400, 403, 404, 413, 422, 429, 500, *AUTH_ERRORS)
_REPLY_ERRORS = {
    503: "The database is overloaded, starting or down (then `Retry-After` says how many "
    "seconds to wait), the token signing keys (AUTH_JWKS_URL) cannot be fetched, or the "
    "service shut down before the reply was done (the message was saved, and the reply as "
    "failed)."
}
# With an Idempotency-Key (app/idempotency/keys.py).
_KEYED_ERRORS = {
    409: "Sent again with its `Idempotency-Key` while another request with that key was "
    "being processed, or (`stream=false`, `POST /api/v1/chat`) while the reply the first "
    "started is still generated: send it again later.",
    422: "The request is invalid: its fields or its `Idempotency-Key` (`detail` lists each "
    "problem), what it asks of the data it names, or a key that was sent with a different "
    "request (`detail` says what).",
}


def _streamed_again(same: str) -> str:
    """What a stream sent again with its Idempotency-Key answers (`same`: what else matches)."""
    return f"""

Sent again with the same `Idempotency-Key` and {same}, it stores nothing: the stream is the
reply the first started, from its `session` event (as `GET .../sessions/{{session_id}}/stream`
resumes it): live while it is generated; once ended, its stored text as one `delta` and a
`done` with its stored status (`failed` for a reply that came to nothing)."""


_STREAM_EVENTS = """Events: `session` (`{session_id, user_message_id, message_id}`), then
`delta` (`{content}`) for each piece of the reply, then `done` (`{session_id, message_id,
status}`) or `error` (`{detail}`). `status` is `incomplete` when the reply was stopped
(`POST .../stop`). Each event has an `id`, `<message_id>:<offset>` (the characters of the
reply sent so far): `GET .../sessions/{session_id}/stream` with it as `Last-Event-ID` resumes
the stream after it. When the message starts a session and a model writes titles, `title`
(`{session_id, title}`) may come among the deltas, before `done`: the title is then written."""

MessageIdPath = Annotated[uuid.UUID, Path(description="The message's id.")]


@router.post(
    "",
    summary="Send a message and get the assistant's reply",
    responses=error_responses(
        *_SEND_ERRORS, 409, 502, 504, descriptions=_REPLY_ERRORS | _KEYED_ERRORS
    ),
)
async def chat(
    body: RateLimitedChatRequest,
    caller: CallerDep,
    db: DatabaseDep,
    assistant: AssistantDep,
    tasks: ReplyTasksDep,
    settings: SettingsDep,
    titles: TitleTasksDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ChatResponse:
    """Creates the session on its first message; saves the message and the reply.

    A `session_id` that another user has answers 404 and writes nothing; one nobody has is
    created. Choose random ids (UUIDs): a 404 shows that an id is taken.

    Sent again with the same `Idempotency-Key` and body, it stores nothing and answers what
    the first answered: the stored reply, or the same error (502, 503, 504: the message is
    stored once; regenerate the reply, or send it with a new key); 409 while the reply is
    still generated.
    """
    return await service.process_chat(
        db,
        assistant,
        caller,
        body,
        history_max_messages=settings.history_max_messages,
        tasks=tasks,
        titles=titles,
        key=IdempotencyKey.of(
            idempotency_key,
            settings.idempotency_key_ttl_hours,
            "chat",
            body.model_dump(mode="json"),
        ),
    )


async def _start_stream(
    body: RateLimitedChatRequest,
    caller: CallerDep,
    db: DatabaseDep,
    assistant: AssistantDep,
    tasks: ReplyTasksDep,
    settings: SettingsDep,
    titles: TitleTasksDep,
    relay: ReplyRelayDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> AsyncIterator[bytes]:
    # A dependency, so that errors before the first event still get their own HTTP status.
    key = IdempotencyKey.of(
        idempotency_key,
        settings.idempotency_key_ttl_hours,
        "chat/stream",
        body.model_dump(mode="json"),
    )
    started = await idempotency.once(
        key,
        db,
        lambda: start_chat_stream(
            db,
            assistant,
            tasks,
            caller,
            body,
            history_max_messages=settings.history_max_messages,
            titles=titles,
            key=key,
        ),
    )
    if isinstance(started, KeyedRequest):
        return await replay_stream(db, tasks, caller, started, relay=relay)
    return stream_frames(started)


@router.post(
    "/stream",
    summary="Send a message and stream the assistant's reply (Server-Sent Events)",
    # No media type of its own: the 200 is documented once, as the events.
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {"content": SSE_CONTENT},
        **json_error_responses(*_SEND_ERRORS, 409, descriptions=_KEYED_ERRORS),
    },
    description=_STREAM_EVENTS
    + "\n\nThe reply is generated and saved even if the client disconnects mid-stream."
    + _streamed_again("body"),
)
async def chat_stream(frames: Annotated[AsyncIterator[bytes], Depends(_start_stream)]) -> Response:
    # Not one of FastAPI's generator routes: those leave the events' generator open when the
    # client leaves mid-stream (its stream gauge and follower stay until garbage collection).
    # It also costs about 40 us less CPU per `delta` than a generator route's two memory
    # streams, task group and timeout per event (docs/performance.md, "Concurrent streams").
    return frames_response(frames)


@router.post(
    "/sessions/{session_id}/messages/{message_id}/regenerate",
    summary="Regenerate an assistant reply: a new reply beside it, made current",
    response_model=None,
    responses={
        200: {
            "description": "The new reply: streamed (default), or as one JSON body with "
            "`stream=false`.",
            "content": {
                **SSE_CONTENT,
                "application/json": {"schema": {"$ref": "#/components/schemas/ChatResponse"}},
            },
        },
        **json_error_responses(
            404,
            409,
            422,
            429,
            500,
            *AUTH_ERRORS,
            502,
            504,
            descriptions=_REPLY_ERRORS | _KEYED_ERRORS,
        ),
    },
    description="The assistant answers the same message again, seeing only the conversation "
    "up to it; the new reply becomes a sibling of `message_id` (an assistant message; a user "
    "message is a 422) and the current branch. The old reply stays stored.\n\n"
    + _STREAM_EVENTS
    + " `user_message_id` is the message answered.\n\nWith `stream=false` the answer is the "
    "JSON body of `POST /api/v1/chat`."
    + _streamed_again("path and `stream`")
    + " With `stream=false`: as `POST /api/v1/chat` sent again.",
)
async def regenerate_reply(
    request: Request,
    session_id: SessionIdPath,
    message_id: MessageIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    assistant: AssistantDep,
    tasks: ReplyTasksDep,
    settings: SettingsDep,
    relay: ReplyRelayDep,
    stream: Annotated[
        bool, Query(description="Stream the reply (Server-Sent Events); false: one JSON body.")
    ] = True,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    # Counted here, once every parameter is valid: a request refused with a 422 uses no room.
    await count_message(request, caller)
    key = IdempotencyKey.of(
        idempotency_key,
        settings.idempotency_key_ttl_hours,
        "regenerate",
        {"session_id": session_id, "message_id": str(message_id), "stream": stream},
    )
    accepted = await idempotency.once(
        key,
        db,
        lambda: service.accept_regeneration(
            db,
            caller,
            session_id,
            message_id,
            history_max_messages=settings.history_max_messages,
            reply_start=ReplyStart.of(assistant, tasks, key),
        ),
    )
    if isinstance(accepted, KeyedRequest):
        if stream:
            return frames_response(await replay_stream(db, tasks, caller, accepted, relay=relay))
        reply = await service.answer_again(db, accepted)
        return Response(reply.model_dump_json(), media_type="application/json")
    if not stream:
        reply = await service.answer(db, assistant, tasks, accepted)
        return Response(reply.model_dump_json(), media_type="application/json")
    return frames_response(stream_frames(start_reply_stream(db, assistant, tasks, accepted)))


@router.put(
    "/sessions/{session_id}/branch",
    summary="Switch branch: make current the branch through a message",
    responses=error_responses(400, 404, 413, 500, *AUTH_ERRORS),
)
async def switch_branch(
    session_id: SessionIdPath,
    choice: Annotated[BranchChoice, Body()],
    caller: CallerDep,
    db: DatabaseDep,
    limit: Annotated[
        int | None,
        Query(ge=1, le=500, description="Answer only the newest `limit` messages of the branch."),
    ] = None,
) -> SessionDetail:
    """The branch through `message_id` becomes current, continued downward by the choice
    remembered at each fork below it; the choices at the forks above it are remembered, so the
    session opens on this branch from any device. `message_count` and `last_message` follow the
    branch at once; `updated_at` does not change. Answers the session as
    `GET /api/v1/chat/sessions/{session_id}` does."""
    return await tree.switch_branch(db, caller, session_id, choice.message_id, limit=limit)


_MAX_ORDINAL = 2_147_483_647  # 32-bit integers


@router.get(
    "/sessions/{session_id}/tree",
    summary="Every message of every branch, in the order written (paged)",
    responses=error_responses(404, 500, *AUTH_ERRORS),
)
async def get_session_tree(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Messages per page.")] = 200,
    cursor: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{1,10}$",
            description="`next_cursor` of the previous page: the messages after it.",
        ),
    ] = None,
) -> SessionTree:
    """Each message carries `parent_id` and `sibling_ids`, so that a client can draw the whole
    tree; `current_message_id` ends the current branch. Pages cost their own size at any
    depth."""
    # Past every ordinal there can be: an empty last page.
    after = 0 if cursor is None else min(int(cursor), _MAX_ORDINAL)
    return await tree.get_tree_page(db, caller, session_id, after=after, limit=limit)
