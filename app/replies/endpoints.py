"""Stopping the reply being generated for a session."""

from fastapi import APIRouter

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep, ReplyTasksDep, TitleTasksDep
from app.kit.error_responses import AUTH_ERRORS, error_responses
from app.kit.schemas import SessionIdPath
from app.replies.schemas import StopResult
from app.replies.streaming import stop_reply

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])


@router.post(
    "/sessions/{session_id}/stop",
    summary="Stop the reply being streamed for a session",
    responses=error_responses(404, 500, *AUTH_ERRORS),
)
async def stop_session_reply(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    tasks: ReplyTasksDep,
    titles: TitleTasksDep,
) -> StopResult:
    """What was generated so far is saved as the reply (`metadata.status` `incomplete`, or
    `failed` if nothing was), and the stream ends with `done` (`status: incomplete`). Answers
    once the reply is saved; `stopped` is false when no reply was being generated. A stop acts
    on the replica that runs the stream (see the README on scaling out). A title being asked
    of the model beside the reply is not written."""
    return StopResult(stopped=await stop_reply(db, tasks, caller, session_id, titles))
