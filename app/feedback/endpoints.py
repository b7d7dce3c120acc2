"""Feedback endpoints: thumbs up or down (with an optional comment) on a reply, clearing them,
and the export of everyone's feedback for service callers."""

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep
from app.feedback import service
from app.feedback.cursor import InvalidCursor, decode_cursor
from app.feedback.queries import FeedbackPosition
from app.feedback.schemas import FeedbackList, FeedbackRequest, MessageFeedback
from app.kit.error_responses import AUTH_ERRORS, error_responses
from app.kit.schemas import IsoDateTime, SessionIdPath

router = APIRouter(tags=["feedback"])

FEEDBACK = "/api/v1/chat/sessions/{session_id}/messages/{message_id}/feedback"

MessageIdPath = Annotated[uuid.UUID, Path(description="The assistant message (reply) rated.")]

_NOT_FOUND = {
    404: "No such session, or not one of the caller's (`Session not found`); or no such "
    "message in it (`Message not found in this session`).",
}
_RATE_ERRORS = error_responses(404, 409, 422, 500, *AUTH_ERRORS, descriptions=_NOT_FOUND)
# Setting reads a body too.
_SET_ERRORS = error_responses(400, 404, 409, 413, 422, 500, *AUTH_ERRORS, descriptions=_NOT_FOUND)
_RATE_DESCRIPTION = (
    "Only replies can be rated: a message of another role is refused with a 422 (`Only an "
    "assistant message can be rated`), and a reply still being generated with a 409. A "
    "session of another user is a 404, the same as one that does not exist."
)


@router.put(
    FEEDBACK,
    summary="Rate a reply: thumbs up or down, with an optional comment",
    description="Setting it again replaces it, comment included. " + _RATE_DESCRIPTION,
    responses=_SET_ERRORS,
)
async def set_feedback(
    session_id: SessionIdPath,
    message_id: MessageIdPath,
    body: FeedbackRequest,
    caller: CallerDep,
    db: DatabaseDep,
) -> MessageFeedback:
    return await service.set_feedback(db, caller, session_id, message_id, body)


@router.delete(
    FEEDBACK,
    summary="Clear the rating of a reply",
    description="Idempotent: a reply without a rating answers 204 too. " + _RATE_DESCRIPTION,
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_RATE_ERRORS,
)
async def clear_feedback(
    session_id: SessionIdPath, message_id: MessageIdPath, caller: CallerDep, db: DatabaseDep
) -> None:
    await service.clear_feedback(db, caller, session_id, message_id)


def _invalid_query(name: str, value: str, reason: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("query", name),
                "msg": f"Value error, {reason}",
                "input": value,
            }
        ]
    )


def _in_utc(moment: datetime) -> datetime:
    """A time without a zone is UTC; one that cannot be expressed in UTC is invalid (422)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise _invalid_query("since", moment.isoformat(), "out of range in UTC") from None


def _position(cursor: str | None) -> FeedbackPosition | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except InvalidCursor as exc:
        raise _invalid_query("cursor", cursor, f"invalid cursor: {exc}") from None


@router.get(
    "/api/v1/feedback",
    summary="List everyone's feedback on replies, for evaluating models (service callers)",
    responses=error_responses(
        403,
        500,
        *AUTH_ERRORS,
        descriptions={403: "Only service callers may list feedback."},
    ),
)
async def list_feedback(
    caller: CallerDep,
    db: DatabaseDep,
    since: Annotated[
        IsoDateTime | None,
        Query(
            description=(
                "Only feedback stored (set, changed or imported: `stored_at`) at or after this "
                "time (ISO 8601; without a time zone, UTC)."
            )
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Entries per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="`next_cursor` of the previous page: the entries after it.",
        ),
    ] = None,
) -> FeedbackList:
    """Least recently stored first (`stored_at`, then by message id), so that an export can
    resume from its last page's `next_cursor`, or from the time it last ran (`since`): a
    rating imported since then is in it, although its `updated_at` (the time it was given)
    is older. Each entry has the
    reply rated (with the provider and model its metadata names), the message it answered,
    the session and its owner. Service callers (`service_role` tokens) only, and anyone in
    open mode: the callers that may list every user's sessions; other users get a 403."""
    return await service.list_feedback(
        db,
        caller,
        since=None if since is None else _in_utc(since),
        after=_position(cursor),
        limit=limit,
    )
