"""Asking the model for a session's title on demand."""

from fastapi import APIRouter, Request

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep, TitleTasksDep
from app.kit.error_responses import AUTH_ERRORS, error_responses
from app.kit.schemas import SessionIdPath
from app.ratelimit.dependencies import count_message
from app.sessions.schemas import SessionSummary
from app.titles.service import write_title_now

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])

_TITLE_ERRORS = {
    409: "No model writes titles on this server (TITLE_GENERATION is off).",
    422: "The request is invalid, or the session has no user message to write a title from.",
    502: "The model failed to write a title, or answered without one; the title is unchanged.",
    504: "The model did not write a title in TITLE_TIMEOUT_SECONDS; the title is unchanged.",
}


@router.post(
    "/sessions/{session_id}/title",
    summary="Ask the model for a new title",
    responses=error_responses(
        404, 409, 422, 429, 500, *AUTH_ERRORS, 502, 504, descriptions=_TITLE_ERRORS
    ),
    description="The title model writes a title from the first exchange of the session's "
    "current branch (its first message and the reply to it), which replaces the title, "
    "whoever wrote it: `title_source` becomes `model`. A rename (`PATCH`) that arrives while "
    "the title is being written wins, and the answer shows it. Counted against the rate limit "
    "of messages. Answers the session's summary.",
)
async def write_session_title(
    request: Request,
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    titles: TitleTasksDep,
) -> SessionSummary:
    # Counted here, once every parameter is valid: a request refused with a 422 uses no room.
    await count_message(request, caller)
    return await write_title_now(db, titles, caller, session_id)
