"""Request and response schemas of the chat API (the contract the frontend was written against)."""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.config import get_settings
from app.domain import USER_ID_MAX_CHARS, Role, unstorable_reason
from app.kit.text import make_chosen_title

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
TITLE_MAX_CHARS = 200

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


def _in_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# Converted to UTC when the model is built; Pydantic's own JSON encoder then writes the `Z`
# suffix, four times faster than a Python serializer per value (a page has 100 timestamps).
UTCTimestamp = Annotated[
    datetime,
    AfterValidator(_in_utc),
    Field(examples=["2025-11-03T10:45:23.512000Z"]),
]


def _storable(value: str) -> str:
    reason = unstorable_reason(value)
    if reason is not None:
        raise ValueError(reason)
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
            f"The user the session belongs to: 1 to {USER_ID_MAX_CHARS} characters; no NUL "
            "characters or unpaired surrogates."
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


def _single_line(value: str) -> str:
    if not value.split():
        raise ValueError("must not be empty or only whitespace")
    # The automatic title's rules, so that no title carries bidi controls past its end. Text
    # with nothing visible is valid here (the schema cannot tell visible from not) and reads
    # as an untitled session.
    return make_chosen_title(value)


SessionTitle = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TITLE_MAX_CHARS),
    AfterValidator(_storable),
    AfterValidator(_single_line),
    Field(
        description=(
            f"A title chosen by the user: 1 to {TITLE_MAX_CHARS} characters. Stored on one "
            "line, without bidirectional controls, as automatic titles are."
        ),
        json_schema_extra={"pattern": MESSAGE_PATTERN},
    ),
]


class BaseResponse(BaseModel):
    """Base of every response body."""

    model_config = ConfigDict(from_attributes=True)


class RequestBody(BaseModel):
    """Base of every request body: JSON types are taken as they are.

    Strict mode refuses what lax mode would convert: `"yes"`, `"true"`, `1` or `1.0` for a
    boolean (a client sending those has a bug, and guessing what it meant would hide it).
    Every field is a string or a boolean, whose JSON types strict mode takes as they are.
    Query parameters are strings on the wire and stay lax.
    """

    model_config = ConfigDict(strict=True)


class ChatRequest(RequestBody):
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
    pinned: bool = Field(description="Pinned sessions are listed first.")
    archived: bool = Field(description="Archived sessions are listed only when asked for.")


class SessionListItem(SessionSummary):
    """A session in the sidebar list or in search results."""

    snippet: str | None = Field(
        default=None,
        description=(
            "Search results only: an excerpt of the message that matches best; null when only "
            "the title matches, and outside a search."
        ),
    )


class SessionsListResponse(BaseResponse):
    """A page of chat sessions: pinned first, then most recent activity first; with `q`, the
    sessions that match, best match first.

    Page mode (`page`, `page_size`) fills every field. Cursor mode (`limit`, `cursor`) leaves
    `page` and `total_pages` null; `total` is null when `include_total=false`.
    """

    sessions: list[SessionListItem]
    total: int | None
    page: int | None
    page_size: int
    total_pages: int | None
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the sessions after these; null at the end."
    )
    has_more: bool


def _without_null(schema: dict[str, Any]) -> None:
    """`anyOf: [X, null]` as plain X."""
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    schema.pop("default", None)


class SessionUpdate(RequestBody):
    """Rename, pin or archive a session; fields left out stay as they are."""

    # At least one field; null is not a value (the schema says so, and the validator agrees).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # None means "left out"; an explicit null is invalid, and the schema does not offer it.
    title: SessionTitle | None = Field(default=None, json_schema_extra=_without_null)
    pinned: bool | None = Field(default=None, json_schema_extra=_without_null)
    archived: bool | None = Field(default=None, json_schema_extra=_without_null)

    @field_validator("title", "pinned", "archived", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("must not be null (leave the field out instead)")
        return value

    @model_validator(mode="after")
    def _changes_something(self) -> "SessionUpdate":
        if not self.model_fields_set:
            raise ValueError("give at least one of title, pinned, archived")
        return self


class DeletedSessions(BaseResponse):
    deleted: int = Field(description="How many sessions were deleted.")


class ChatMessage(BaseResponse):
    """One stored message."""

    id: uuid.UUID
    seq: int = Field(description="Position in the session, from 1, gap-free.")
    role: Role
    content: str
    metadata: dict[str, Any]
    created_at: UTCTimestamp


class SessionDetail(SessionSummary):
    """A session with its messages, oldest first (all of them, or one page with `limit`)."""

    messages: list[ChatMessage]
    has_more_messages: bool = Field(description="Older messages exist before this page.")
    messages_before: int | None = Field(
        description="Pass as `before` for the page of older messages; null when there are none."
    )


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
    status: Literal["complete", "incomplete"] = Field(
        default="complete",
        description="`incomplete`: the reply was stopped, and what came of it was saved.",
    )


class StreamError(BaseModel):
    """Last event of a failed stream (`event: error`)."""

    detail: str


class StopResult(BaseResponse):
    stopped: bool = Field(
        description="A reply was being generated for the session, and is now stopped and saved."
    )


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer except validation errors."""

    detail: str = Field(examples=["Session not found"])
