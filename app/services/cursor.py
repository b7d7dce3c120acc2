"""Opaque sidebar cursors: the sort key of the last session of a page, base64url-encoded."""

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime

from app.db.queries import ListPosition

_VERSION = 1


class InvalidCursor(ValueError):
    pass


def encode_cursor(position: ListPosition) -> str:
    payload = {
        "v": _VERSION,
        "p": position.pinned,
        "u": position.updated_at.isoformat(),
        "i": position.id.hex,
    }
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> ListPosition:
    """The position a cursor names; `InvalidCursor` for anything this service did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if payload.get("v") != _VERSION or not isinstance(payload.get("p"), bool):
            raise InvalidCursor("unknown cursor version")
        updated_at = datetime.fromisoformat(payload["u"])
        if updated_at.tzinfo is None:
            raise InvalidCursor("cursor time without a time zone")
        updated_at = updated_at.astimezone(UTC)
        return ListPosition(
            pinned=payload["p"], updated_at=updated_at, id=uuid.UUID(hex=payload["i"])
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
