"""Opaque sidebar cursors, base64url-encoded JSON.

A listing's cursor is the sort key of the last session of a page. A search's is how many
results came before, with a fingerprint of the search, since results are ranked, not keyed.
"""

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.sessions.queries import ListPosition

_VERSION = 1
# A search cursor deeper than this is not one this service issued: pages stop at it.
SEARCH_MAX_OFFSET = 10_000


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SearchPosition:
    """Where a page of search results ends: the number of results before the next page."""

    offset: int
    fingerprint: str


def search_fingerprint(*parts: object) -> str:
    """Identifies a search (its words and filters), so a cursor is not reused for another."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _encode(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def encode_cursor(position: ListPosition) -> str:
    return _encode(
        {
            "v": _VERSION,
            "p": position.pinned,
            "u": position.updated_at.isoformat(),
            "i": position.id.hex,
        }
    )


def encode_search_cursor(position: SearchPosition) -> str:
    return _encode({"v": _VERSION, "o": position.offset, "f": position.fingerprint})


def decode_cursor(cursor: str) -> ListPosition | SearchPosition:
    """The position a cursor names; `InvalidCursor` for anything this service did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if payload.get("v") != _VERSION:
            raise InvalidCursor("unknown cursor version")
        if "o" in payload:
            offset, fingerprint = payload["o"], payload["f"]
            if (
                type(offset) is not int
                or not 0 < offset <= SEARCH_MAX_OFFSET
                or not isinstance(fingerprint, str)
            ):
                raise InvalidCursor("not a cursor from this service")
            return SearchPosition(offset=offset, fingerprint=fingerprint)
        if not isinstance(payload.get("p"), bool):
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
