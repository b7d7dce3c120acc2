"""Request and response schemas of sending a message, and of a stored message."""

import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field

from app.config import get_settings
from app.domain import Role
from app.feedback.schemas import MessageFeedback
from app.kit.schemas import (
    MESSAGE_PATTERN,
    PADDED_PATTERN,
    BaseResponse,
    RequestBody,
    SessionId,
    UserId,
    UTCTimestamp,
    storable,
)


def _message_length(value: str) -> str:
    limit = get_settings().message_max_chars
    length = len(value.strip())
    if length == 0:
        raise ValueError("must not be empty or only whitespace")
    if length > limit:
        raise ValueError(f"must be at most {limit} characters (got {length})")
    return value


def _message_schema(schema: dict[str, Any]) -> None:
    """The length limit applies after trimming, which no JSON Schema keyword can express (a
    counted regex this long is more than common regex engines accept). So: at most the limit,
    unless the text starts or ends with whitespace. Text the schema rejects is always too long;
    padded text the schema accepts can still be too long once trimmed."""
    # Called when the OpenAPI document is built, once the settings are known.
    schema.update(
        minLength=1,
        pattern=MESSAGE_PATTERN,
        anyOf=[{"maxLength": get_settings().message_max_chars}, {"pattern": PADDED_PATTERN}],
    )


MessageText = Annotated[
    str,
    AfterValidator(storable),
    AfterValidator(_message_length),
    Field(
        description=(
            "The user's message: 1 to MESSAGE_MAX_CHARS (default 32,000) characters after "
            "trimming whitespace; no NUL characters or unpaired surrogates. Text that starts or "
            "ends with whitespace may be longer, as long as it is within the limit once trimmed."
        ),
        examples=["What payment processors do you support?"],
        json_schema_extra=_message_schema,
    ),
]


class ChatRequest(RequestBody):
    model_config = ConfigDict(extra="ignore")

    message: MessageText
    session_id: SessionId | None = Field(
        default=None,
        description="Continue this session, or create it under this id. Omit to start a new one.",
    )
    user_id: UserId | None = None
    # A UUID is a string in JSON: taken from one (strict mode would want a UUID object).
    edit_of: uuid.UUID | None = Field(
        default=None,
        strict=False,
        description=(
            "Edit a message: the id of a user message of the session named by `session_id` "
            "(without one, no session has it: 404). The new message becomes its sibling (same "
            "parent) and its branch the current one; the original and everything after it "
            "stay stored."
        ),
    )


class ChatResponse(BaseResponse):
    """The assistant's reply to one message."""

    session_id: str
    response: str
    message_id: uuid.UUID = Field(description="Id of the stored assistant message.")
    user_message_id: uuid.UUID = Field(description="Id of the stored user message.")


class ChatMessage(BaseResponse):
    """One stored message."""

    id: uuid.UUID
    seq: int = Field(
        description="Position on its branch, from 1 (its parent's seq + 1); siblings share it."
    )
    role: Role
    content: str
    metadata: dict[str, Any]
    created_at: UTCTimestamp
    parent_id: uuid.UUID | None = Field(
        description="The message this one follows; null for a first message."
    )
    sibling_ids: list[uuid.UUID] = Field(
        description=(
            "The messages with the same parent (for a first message, the session's first "
            "messages), this one included, oldest first: more than one where the conversation "
            "branches."
        )
    )
    feedback: MessageFeedback | None = Field(
        description="The rating the session's owner gave this reply; null if none."
    )


class BranchChoice(RequestBody):
    """Which branch to make current."""

    model_config = ConfigDict(extra="forbid")

    message_id: uuid.UUID = Field(
        strict=False,
        description=(
            "A message of the session: the branch through it becomes current, continued "
            "downward by the choice remembered at each fork below it (never chosen: the "
            "newest child)."
        ),
    )


class TreeMessage(ChatMessage):
    """A message of the tree, with its place in the order the session's messages were written."""

    ordinal: int = Field(description="1 for the session's first message written, then 2, 3, …")


class SessionTree(BaseResponse):
    """A page of every message of a session, on every branch, in the order they were written."""

    session_id: str
    current_message_id: uuid.UUID | None = Field(
        description="The current branch's last message; null while the session is empty."
    )
    messages: list[TreeMessage]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the messages after these; null at the end."
    )
    has_more: bool
