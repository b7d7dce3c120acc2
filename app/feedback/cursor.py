"""Opaque cursors of the feedback export: the sort key of the last entry of a page. Distinct
from the sidebar's (app/sessions/cursor.py): neither is taken for the other."""

import uuid

from app.feedback.queries import FeedbackPosition
from app.kit.cursor import InvalidCursor, decode_payload, encode_payload, reading_cursor, utc_time

__all__ = ["InvalidCursor", "decode_cursor", "encode_cursor"]

# Version 1 since before migration 0020, whose `u` was an `updated_at`: the `stored_at` 0020
# gave every rating not imported, so such a cursor resumes where it was (and an imported
# rating whose `stored_at` moved later is after it, not skipped).
_VERSION = 1
_KIND = "feedback"


def encode_cursor(position: FeedbackPosition) -> str:
    return encode_payload(
        {
            "v": _VERSION,
            "k": _KIND,
            "u": position.stored_at.isoformat(),
            "i": position.message_id.hex,
        }
    )


def decode_cursor(cursor: str) -> FeedbackPosition:
    """The position a cursor names; `InvalidCursor` for anything this service did not issue."""
    with reading_cursor():
        payload = decode_payload(cursor)
        if payload.get("k") != _KIND:
            raise InvalidCursor("not a cursor of this listing")
        if payload.get("v") != _VERSION:
            raise InvalidCursor("unknown cursor version")
        return FeedbackPosition(
            stored_at=utc_time(payload["u"]), message_id=uuid.UUID(hex=payload["i"])
        )
