"""Opaque sidebar cursors, base64url-encoded JSON.

A listing's cursor is the sort key of the last session of a page (and, for a listing
filtered by folder or tag, a fingerprint of its filters). A search's is how many results came
before, with a fingerprint of the search, since results are ranked, not keyed.
"""

import hashlib
import json
import uuid
from dataclasses import dataclass

from app.kit.cursor import InvalidCursor, decode_payload, encode_payload, reading_cursor, utc_time
from app.sessions.queries import ListPosition, SessionFilter

__all__ = [
    "SEARCH_MAX_OFFSET",
    "InvalidCursor",
    "SearchPosition",
    "decode_cursor",
    "encode_cursor",
    "encode_search_cursor",
    "filters_fingerprint",
    "list_fingerprint",
    "search_fingerprint",
]

_VERSION = 1
# A search cursor deeper than this is not one this service issued: pages stop at it.
SEARCH_MAX_OFFSET = 10_000


@dataclass(frozen=True, slots=True)
class SearchPosition:
    """Where a page of search results ends: the number of results before the next page."""

    offset: int
    fingerprint: str


def search_fingerprint(*parts: object) -> str:
    """Identifies a search (its words and filters), so a cursor is not reused for another."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def filters_fingerprint(where: SessionFilter) -> list[object]:
    """The folder and tag filters of a listing or search, as fingerprint parts ([] without)."""
    if not where.narrowed:
        return []
    return [str(where.folder) if where.folder is not None else None, list(where.tags)]


def list_fingerprint(where: SessionFilter) -> str | None:
    """What a listing's cursor carries so that only a listing with the same filters takes it:
    None for a listing without folder or tag filters (such cursors are as they always were)."""
    if not where.narrowed:
        return None
    return search_fingerprint(where.user_id, where.archived, *filters_fingerprint(where))


def encode_cursor(position: ListPosition) -> str:
    payload = {
        "v": _VERSION,
        "p": position.pinned,
        "u": position.updated_at.isoformat(),
        "i": position.id.hex,
    }
    if position.filters is not None:
        payload["f"] = position.filters
    return encode_payload(payload)


def encode_search_cursor(position: SearchPosition) -> str:
    return encode_payload({"v": _VERSION, "o": position.offset, "f": position.fingerprint})


def decode_cursor(cursor: str) -> ListPosition | SearchPosition:
    """The position a cursor names; `InvalidCursor` for anything this service did not issue."""
    with reading_cursor():
        payload = decode_payload(cursor)
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
        filters = payload.get("f")
        if filters is not None and not isinstance(filters, str):
            raise InvalidCursor("not a cursor from this service")
        return ListPosition(
            pinned=payload["p"],
            updated_at=utc_time(payload["u"]),
            id=uuid.UUID(hex=payload["i"]),
            filters=filters,
        )
