"""Request and response schemas of feedback: setting it on a reply, as messages carry it, and
the list service callers export."""

import uuid
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from app.domain import FEEDBACK_COMMENT_MAX_CHARS, Rating
from app.kit.schemas import NO_NUL_PATTERN, BaseResponse, RequestBody, UTCTimestamp, storable


def _blank_as_none(value: str) -> str | None:
    return value if value.strip() else None


FeedbackComment = Annotated[
    str,
    StringConstraints(max_length=FEEDBACK_COMMENT_MAX_CHARS),
    AfterValidator(storable),
    AfterValidator(_blank_as_none),
    Field(
        description=(
            f"Why: up to {FEEDBACK_COMMENT_MAX_CHARS:,} characters; no NUL characters or "
            "unpaired surrogates. Empty or only whitespace: no comment."
        ),
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    ),
]


class FeedbackRequest(RequestBody):
    """The caller's rating of a reply; it replaces any rating given before (comment included)."""

    model_config = ConfigDict(extra="forbid")

    rating: Rating = Field(examples=["up"])
    comment: FeedbackComment | None = None


class MessageFeedback(BaseResponse):
    """The rating a reply was given."""

    rating: Rating
    comment: str | None
    updated_at: UTCTimestamp = Field(description="When it was last set.")


class RatedReply(BaseResponse):
    """The assistant message that was rated, and the model that wrote it (from its metadata;
    null if it did not say)."""

    id: uuid.UUID
    content: str
    provider: str | None
    model: str | None


class AnsweredMessage(BaseResponse):
    """The message the reply answered (its parent): normally the user's question."""

    id: uuid.UUID
    content: str


class FeedbackItem(BaseResponse):
    session_id: str
    user_id: str | None = Field(description="The session's owner (null in open mode).")
    rating: Rating
    comment: str | None
    created_at: UTCTimestamp = Field(
        description="When the rating was first given (for an imported one: as its export says)."
    )
    updated_at: UTCTimestamp = Field(
        description="When the rating was last given (for an imported one: as its export says)."
    )
    stored_at: UTCTimestamp = Field(
        description=(
            "When this service last stored it: set, changed or imported. The export's order, "
            "and what `since` compares."
        )
    )
    message: RatedReply
    answered: AnsweredMessage | None = Field(
        description="The message the reply answered; null for a reply with no parent."
    )


class FeedbackList(BaseResponse):
    """A page of feedback, least recently stored first (then by message id)."""

    feedback: list[FeedbackItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the feedback after these; null at the end."
    )
    has_more: bool
