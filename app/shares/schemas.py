"""Request and response schemas of share links."""

from typing import Annotated

from pydantic import BeforeValidator, Field

from app.domain import Role
from app.kit.schemas import BaseResponse, RequestBody, UTCTimestamp

# secrets.token_urlsafe(24): 24 random bytes (192 bits) as 32 URL-safe characters.
SHARE_ID_BYTES = 24
SHARE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_EXPIRY_DAYS = 365


def _whole_number(value: object) -> object:
    """JSON Schema counts 7.0 as an integer, and so does this API; strict mode still refuses
    7.5, "7" and true."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class ShareCreate(RequestBody):
    expires_in_days: Annotated[int | None, BeforeValidator(_whole_number)] = Field(
        default=None,
        ge=1,
        le=MAX_EXPIRY_DAYS,
        description=f"The link stops working after this many days (1 to {MAX_EXPIRY_DAYS}). "
        "Omitted or null: it works until it is revoked or its session is deleted.",
    )


class ShareCreated(BaseResponse):
    """A new link to a snapshot of the session's current branch."""

    share_id: str = Field(
        description="Random and unguessable (192 bits); unrelated to the session's id.",
        examples=["hV1pG8gq0XyN3m2sKq7bWcTz4Rj5uLdE"],
    )
    url: str = Field(
        description="The read-only page of the link: `/s/{share_id}`, absolute under "
        "PUBLIC_BASE_URL when that is set.",
        examples=["/s/hV1pG8gq0XyN3m2sKq7bWcTz4Rj5uLdE"],
    )
    created_at: UTCTimestamp
    expires_at: UTCTimestamp | None = Field(description="Null: never expires.")


class ShareSummary(ShareCreated):
    """One of the caller's links."""

    session_id: str = Field(description="The session it is a snapshot of.")
    title: str = Field(description="The session's title when it was shared.")


class SharesList(BaseResponse):
    shares: list[ShareSummary] = Field(description="Live links, newest first.")


class SharedMessage(BaseResponse):
    role: Role
    content: str
    created_at: UTCTimestamp


class SharedConversation(BaseResponse):
    """What a link shows: the session's title and current branch when it was shared."""

    title: str
    messages: list[SharedMessage] = Field(description="Oldest first.")
    created_at: UTCTimestamp = Field(description="When the link was made.")
