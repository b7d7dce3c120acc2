"""Opaque cursors of the feedback export, base64url-encoded JSON: the sort key of the last entry
of a page. Distinct from the sidebar's (app/sessions/cursor.py): neither is taken for the other."""

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime

from app.feedback.queries import FeedbackPosition

_VERSION = 1
_KIND = "feedback"


class InvalidCursor(ValueError):
    pass


def encode_cursor(position: FeedbackPosition) -> str:
    payload = {
        "v": _VERSION,
        "k": _KIND,
        "u": position.updated_at.isoformat(),
        "i": position.message_id.hex,
    }
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> FeedbackPosition:
    """The position a cursor names; `InvalidCursor` for anything this service did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("k") != _KIND:
            raise InvalidCursor("not a cursor of this listing")
        if payload.get("v") != _VERSION:
            raise InvalidCursor("unknown cursor version")
        updated_at = datetime.fromisoformat(payload["u"])
        if updated_at.tzinfo is None:
            raise InvalidCursor("cursor time without a time zone")
        return FeedbackPosition(
            updated_at=updated_at.astimezone(UTC), message_id=uuid.UUID(hex=payload["i"])
        )
    except InvalidCursor:
        raise
    except (
        binascii.Error,
        UnicodeDecodeError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        OverflowError,  # a time that cannot be expressed in UTC
        RecursionError,  # absurdly nested JSON
    ):
        raise InvalidCursor("not a cursor from this service") from None
