"""Request and response schemas of sessions: the sidebar's list, a session's summary and
detail, and its changes (the contract the frontend was written against)."""

import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.domain import TitleSource
from app.kit.schemas import MESSAGE_PATTERN, BaseResponse, RequestBody, UTCTimestamp, storable
from app.kit.text import make_chosen_title
from app.messages.schemas import ChatMessage
from app.tags.schemas import TAGS_PER_SESSION, TagName

TITLE_MAX_CHARS = 200


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
    AfterValidator(storable),
    AfterValidator(_single_line),
    Field(
        description=(
            f"A title chosen by the user: 1 to {TITLE_MAX_CHARS} characters. Stored on one "
            "line, without bidirectional controls, as automatic titles are."
        ),
        json_schema_extra={"pattern": MESSAGE_PATTERN},
    ),
]


class SessionSummary(BaseResponse):
    """Summary of a chat session for the sessions list."""

    session_id: str
    title: str
    title_source: TitleSource = Field(
        description="Who wrote the title: `message` (the first message, cut), `model` (a "
        "model, from the first exchange) or `user` (a rename, which no model title replaces)."
    )
    last_message: str
    message_count: int
    created_at: UTCTimestamp
    updated_at: UTCTimestamp
    pinned: bool = Field(description="Pinned sessions are listed first.")
    archived: bool = Field(description="Archived sessions are listed only when asked for.")
    folder_id: uuid.UUID | None = Field(description="The folder it is in; null: none.")
    tags: list[str] = Field(description="Its tags, in the order they were given.")


class SessionListItem(SessionSummary):
    """A session in the sidebar list or in search results."""

    snippet: str | None = Field(
        default=None,
        description=(
            "Search results only: an excerpt of the message that matches best; null when only "
            "the title matches, and outside a search."
        ),
    )
    match_message_id: uuid.UUID | None = Field(
        default=None,
        description=(
            "Search results only: the id of the message that `snippet` shows (on any branch of "
            "the session); null when only the title matches, and outside a search."
        ),
    )
    match_off_branch: bool = Field(
        default=False,
        description=(
            "Search results only: true when the message `match_message_id` is not on the "
            "session's current branch. To show it, make its branch current with "
            '`PUT /api/v1/chat/sessions/{session_id}/branch` and `{"message_id": '
            "match_message_id}`. False for a title match, and outside a search."
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
    """Rename, pin, archive, file or tag a session; fields left out stay as they are."""

    # At least one field; null is not a value (the schema says so, and the validator agrees).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # None means "left out"; an explicit null is invalid, and the schema does not offer it.
    title: SessionTitle | None = Field(default=None, json_schema_extra=_without_null)
    pinned: bool | None = Field(default=None, json_schema_extra=_without_null)
    archived: bool | None = Field(default=None, json_schema_extra=_without_null)
    folder_id: uuid.UUID | None = Field(
        default=None,
        strict=False,
        description="Put it in this folder (one of its owner's); null takes it out of its folder.",
    )
    tags: list[TagName] | None = Field(
        default=None,
        max_length=TAGS_PER_SESSION,
        json_schema_extra=_without_null,
        description=(
            f"Its tags, replacing those it had: up to {TAGS_PER_SESSION}; names that differ "
            "only in case are the same tag, spelled as the user first wrote it; `[]` removes "
            "them all."
        ),
    )

    @field_validator("title", "pinned", "archived", "tags", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("must not be null (leave the field out instead)")
        return value

    @model_validator(mode="after")
    def _changes_something(self) -> "SessionUpdate":
        if not self.model_fields_set:
            raise ValueError("give at least one of title, pinned, archived, folder_id, tags")
        return self


class DeletedSessions(BaseResponse):
    deleted: int = Field(description="How many sessions were deleted.")


class SessionDetail(SessionSummary):
    """A session with its current branch's messages, oldest first (all of them, or one page
    with `limit`)."""

    current_message_id: uuid.UUID | None = Field(
        description="The current branch's last message; null while the session is empty."
    )
    messages: list[ChatMessage]
    has_more_messages: bool = Field(description="Older messages exist before this page.")
    messages_before: int | None = Field(
        description="Pass as `before` for the page of older messages; null when there are none."
    )
