"""Request and response schemas of tags, and the rule for a label's name (tags and folders)."""

import unicodedata
import uuid
from typing import Annotated

from pydantic import AfterValidator, Field

from app.kit.schemas import STRIPPED_CHARS, BaseResponse, RequestBody, storable
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
    """What makes two names the same: canonically equivalent (`é` as one code point or as `e`
    and a combining accent) and case-folded, by Python, alike on both databases; accents
    count (`café` is not `cafe`). Unicode's canonical caseless match (decomposed, folded),
    composed again to store it; a stored key computed otherwise needs a migration (0020)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def trimmed_pattern(max_chars: int) -> str:
    """Text of 1 to `max_chars` characters once trimmed (`str.strip()`), without NUL, as a
    JSON Schema pattern."""
    space = f"[{STRIPPED_CHARS}]*"
    visible = rf"[^\u0000{STRIPPED_CHARS}]"
    return rf"^{space}{visible}(?:[^\u0000]{{0,{max_chars - 2}}}{visible})?{space}$"


def checked_label(max_chars: int) -> AfterValidator:
    """A name as stored (`label_name`, in NFC: the form a name given in a decomposed form is
    shown in), from text of 1 to `max_chars` characters once trimmed."""

    def check(value: str) -> str:
        trimmed = storable(value).strip()
        if not trimmed:
            raise ValueError("must not be empty or only whitespace")
        if len(trimmed) > max_chars:
            raise ValueError(
                f"must be at most {max_chars} characters, leading and trailing whitespace left out"
            )
        return unicodedata.normalize("NFC", label_name(trimmed))

    return AfterValidator(check)


TagName = Annotated[
    str,
    checked_label(TAG_MAX_CHARS),
    Field(
        description=(
            f"1 to {TAG_MAX_CHARS} characters once trimmed; stored trimmed, on one line, in "
            "Unicode NFC. Names that differ only in case or in their Unicode form (`é` as one "
            "character or as `e` and a combining accent) are the same tag; accents count."
        ),
        json_schema_extra={"pattern": trimmed_pattern(TAG_MAX_CHARS)},
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
