"""Request and response schemas of the chat API (the contract the frontend was written against)."""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from app.core.config import get_settings

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
USER_ID_MAX_CHARS = 255

# The validators' rules, stated in the JSON Schema so that clients (and schema-driven fuzzers) can
# tell valid from invalid text. JSON Schema patterns are ECMA-262 regexes, whose `\s` is not the
# set `str.strip()` removes, so that set (every character `str.isspace()` holds for) is spelled out.
_STRIPPED = (
    r"\t\n\u000b\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
NO_NUL_PATTERN = r"^[^\u0000]*$"
# A character that is neither stripped nor NUL, and no NUL anywhere (unambiguous: linear time).
MESSAGE_PATTERN = rf"^[{_STRIPPED}]*[^\u0000{_STRIPPED}][^\u0000]*$"
PADDED_PATTERN = rf"^[{_STRIPPED}]|[{_STRIPPED}]$"


def _as_utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UTCTimestamp = Annotated[
    datetime,
    PlainSerializer(_as_utc_iso, return_type=str, when_used="json"),
    Field(examples=["2025-11-03T10:45:23.512000Z"]),
]


def _storable(value: str) -> str:
    """Reject text one of the databases cannot store, so both behave the same.

    PostgreSQL refuses NUL in text; lone surrogates (legal in JSON escapes) are not UTF-8.
    """
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
    return value


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


SessionId = Annotated[
    str,
    StringConstraints(pattern=SESSION_ID_PATTERN),
    Field(
        description="Letters, digits, `_` and `-`; 1 to 128 characters.",
        examples=["3f0c9a52-6d1e-4f7b-9f6a-2c8e5b7d1a90"],
    ),
]
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=USER_ID_MAX_CHARS),
    AfterValidator(_storable),
    Field(
        description=(
            "The user the session belongs to: 1 to 255 characters; no NUL characters or "
            "unpaired surrogates."
        ),
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    ),
]
MessageText = Annotated[
    str,
    AfterValidator(_storable),
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


class BaseResponse(BaseModel):
    """Base of every response body."""

    model_config = ConfigDict(from_attributes=True)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: MessageText
    session_id: SessionId | None = Field(
        default=None,
        description="Continue this session, or create it under this id. Omit to start a new one.",
    )
    user_id: UserId | None = None


class ChatResponse(BaseResponse):
    """The assistant's reply to one message."""

    session_id: str
    response: str
    message_id: uuid.UUID = Field(description="Id of the stored assistant message.")


class SessionSummary(BaseResponse):
    """Summary of a chat session for the sessions list."""

    session_id: str
    title: str
    last_message: str
    message_count: int
    created_at: UTCTimestamp
    updated_at: UTCTimestamp


class SessionsListResponse(BaseResponse):
    """Paginated list of chat sessions."""

    sessions: list[SessionSummary]
    total: int
    page: int
    page_size: int
    total_pages: int


class ChatMessage(BaseResponse):
    """One stored message."""

    id: uuid.UUID
    role: Literal["user", "assistant", "system"]
    content: str
    metadata: dict[str, Any]
    created_at: UTCTimestamp


class SessionDetail(SessionSummary):
    """A session with its messages, oldest first."""

    messages: list[ChatMessage]


class StreamStarted(BaseModel):
    """First event of a stream (`event: session`)."""

    session_id: str
    user_message_id: uuid.UUID


class StreamDelta(BaseModel):
    """A piece of the reply (`event: delta`)."""

    content: str


class StreamDone(BaseModel):
    """Last event of a successful stream (`event: done`)."""

    session_id: str
    message_id: uuid.UUID


class StreamError(BaseModel):
    """Last event of a failed stream (`event: error`)."""

    detail: str


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer except validation errors."""

    detail: str = Field(examples=["Session not found"])
