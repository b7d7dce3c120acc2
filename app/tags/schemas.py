"""Request and response schemas of tags, and the rule for a label's name (tags and folders)."""

import uuid
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from app.kit.schemas import MESSAGE_PATTERN, BaseResponse, RequestBody, storable
from app.kit.text import shorten

TAG_MAX_CHARS = 50
TAGS_PER_SESSION = 20
# How many tags one listing may require (`tag`, repeated).
TAGS_PER_FILTER = 10


def label_name(value: str) -> str:
    """A name as a sidebar label shows it: on one line (whitespace runs, newlines too, as one
    space), trimmed, without bidirectional controls; a name with nothing else visible is kept
    as its trimmed text rather than refused."""
    return shorten(value, None) or " ".join(value.split())


def name_key(name: str) -> str:
    """What makes two names the same: case-folded by Python, alike on both databases."""
    return name.casefold()


def _label(value: str) -> str:
    return label_name(storable(value))


TagName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TAG_MAX_CHARS),
    AfterValidator(_label),
    Field(
        description=(
            f"1 to {TAG_MAX_CHARS} characters, not only whitespace; stored trimmed, on one "
            "line. Names that differ only in case are the same tag."
        ),
        json_schema_extra={"pattern": MESSAGE_PATTERN},
        examples=["Work"],
    ),
]


class TagSummary(BaseResponse):
    tag_id: uuid.UUID
    name: str = Field(description="The tag's spelling: the first one it was given, or a rename.")
    session_count: int = Field(description="How many sessions carry it (archived ones too).")


class TagsList(BaseResponse):
    """The caller's tags that some session carries, by name (case-insensitively)."""

    tags: list[TagSummary]


class TagRename(RequestBody):
    """A new name: on every session that carries the tag. A name another of the user's tags
    has (ignoring case) merges the two under that tag."""

    name: TagName
