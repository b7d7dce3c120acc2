"""What every schema of the API shares: the bases of request and response bodies, the error
body, and the field types several features use (session ids, user ids, timestamps) with the
text rules their JSON Schema states."""

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from app.domain import USER_ID_MAX_CHARS, unstorable_reason

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"

# The validators' rules, stated in the JSON Schema so that clients (and schema-driven fuzzers) can
# tell valid from invalid text. JSON Schema patterns are ECMA-262 regexes, whose `\s` is not the
# set `str.strip()` removes, so that set (every character `str.isspace()` holds for) is spelled out.
STRIPPED_CHARS = (
    r"\t\n\u000b\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
NO_NUL_PATTERN = r"^[^\u0000]*$"
# A character that is neither stripped nor NUL, and no NUL anywhere (unambiguous: linear time).
MESSAGE_PATTERN = rf"^[{STRIPPED_CHARS}]*[^\u0000{STRIPPED_CHARS}][^\u0000]*$"
PADDED_PATTERN = rf"^[{STRIPPED_CHARS}]|[{STRIPPED_CHARS}]$"


def _in_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# Converted to UTC when the model is built; Pydantic's own JSON encoder then writes the `Z`
# suffix, four times faster than a Python serializer per value (a page has 100 timestamps).
UTCTimestamp = Annotated[
    datetime,
    AfterValidator(_in_utc),
    Field(examples=["2025-11-03T10:45:23.512000Z"]),
]


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)\s*")


def _not_a_number(value: object) -> object:
    # Pydantic reads a number as seconds since 1970, and `20261207` (ISO 8601's basic date)
    # as such a number: the schema says a date-time string, so neither is one.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError(
            "expected an ISO 8601 date-time such as 2026-12-07T18:00:00Z, not a number"
        )
    return value


# A date-time a client sends (a query parameter): ISO 8601 text only.
IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]


def storable(value: str) -> str:
    reason = unstorable_reason(value)
    if reason is not None:
        raise ValueError(reason)
    return value


SessionId = Annotated[
    str,
    StringConstraints(pattern=SESSION_ID_PATTERN),
    Field(
        description="Letters, digits, `_` and `-`; 1 to 128 characters.",
        examples=["3f0c9a52-6d1e-4f7b-9f6a-2c8e5b7d1a90"],
    ),
]
SessionIdPath = Annotated[
    str,
    Path(pattern=SESSION_ID_PATTERN, description="The session's id."),
]
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=USER_ID_MAX_CHARS),
    AfterValidator(storable),
    Field(
        description=(
            f"The user the session belongs to: 1 to {USER_ID_MAX_CHARS} characters; no NUL "
            "characters or unpaired surrogates."
        ),
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    ),
]


class BaseResponse(BaseModel):
    """Base of every response body."""

    model_config = ConfigDict(from_attributes=True)


class RequestBody(BaseModel):
    """Base of every request body: JSON types are taken as they are.

    Strict mode refuses what lax mode would convert: `"yes"`, `"true"`, `1` or `1.0` for a
    boolean (a client sending those has a bug, and guessing what it meant would hide it).
    Every field is a string or a boolean, whose JSON types strict mode takes as they are, or
    a UUID (`strict=False` on the field: a UUID arrives as a string).
    Query parameters are strings on the wire and stay lax.
    """

    model_config = ConfigDict(strict=True)


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer except validation errors."""

    detail: str = Field(examples=["Session not found"])
