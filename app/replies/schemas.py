"""The events of a streamed reply (Server-Sent Events), and the answer to a stop."""

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from app.kit.schemas import BaseResponse


class StreamStarted(BaseModel):
    """First event of a stream (`event: session`)."""

    session_id: str
    user_message_id: uuid.UUID
    message_id: uuid.UUID = Field(
        description="The reply's id, stored as it starts: the first part of each event's `id`."
    )


class StreamDelta(BaseModel):
    """A piece of the reply (`event: delta`)."""

    content: str


class StreamTitle(BaseModel):
    """The session's title, written by the model beside its first reply (`event: title`),
    sent before `done` when it is ready while the stream is open."""

    session_id: str
    title: str


class StreamDone(BaseModel):
    """Last event of a successful stream (`event: done`)."""

    session_id: str
    message_id: uuid.UUID
    status: Literal["complete", "incomplete", "failed"] = Field(
        default="complete",
        description="`incomplete`: the reply was stopped, and what came of it was saved. A "
        "stream that resumes a reply that had ended already (`GET .../stream` with "
        "`Last-Event-ID`) gets its stored status: also `incomplete` when it was cut short "
        "otherwise, `failed` when it ended without text.",
    )


class StreamError(BaseModel):
    """Last event of a failed stream (`event: error`)."""

    detail: str


class StopResult(BaseResponse):
    stopped: bool = Field(
        description="A reply was being generated for the session, and is now stopped and saved."
    )
